"""Just enough of H.264's headers to know a picture's size and order without decoding it.

The sequence parameter set gives the coded size, its cropping and the reorder depth the
stream promises; the picture parameter set and each slice header give what ordering the
pictures needs: which picture a slice starts, its frame_num and picture order count, and
whether it resets the order (an IDR or memory_management_control_operation 5). Slice headers
are read to their end and their values checked against the ranges H.264 gives them, since a
decoder drops a slice whose header is out of range. Syntax and semantics follow ITU-T H.264
(7.3.2.1.1, 7.3.2.2, 7.3.3, 7.4.3, 8.2.1, E.1.1).

Every parser raises ValueError for what it cannot read or does not handle (interlaced
streams, slice groups, redundant pictures, SP/SI slices, long-term references, POC type 1),
so that a caller that needs to be sure can fall back to decoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SEI",
    "NAL_SLICE",
    "NAL_SPS",
    "BitReader",
    "Pps",
    "SliceHeader",
    "Sps",
    "annexb_units",
    "length_prefixed_units",
    "parse_pps",
    "parse_slice_header",
    "parse_sps",
    "rbsp",
    "sei_payload_types",
]

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
#: Profiles whose SPS carries chroma format, bit depths and scaling matrices (7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 118, 122, 128, 134, 135, 138, 139, 144, 244, 44, 83, 86})
#: Slice types modulo 5 (Table 7-6).
_P, _B, _I, _SP, _SI = range(5)
#: A slice header is first read from this much of its NAL unit (shifting a short integer is
#: cheap), and from _HEADER_BYTES when it runs longer (long reference list changes).
_SHORT_HEADER_BYTES = 40
_HEADER_BYTES = 1024


class _PastEnd(ValueError):
    """Raised when a header reads past the end of the bytes it was given."""


class BitReader:
    """Reads an RBSP (emulation prevention bytes already removed) bit by bit, MSB first."""

    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._size = len(rbsp) * 8
        self._pos = 0

    @property
    def position(self) -> int:
        """How many bits have been read."""
        return self._pos

    def u(self, n: int) -> int:
        """n bits as an unsigned integer."""
        if n == 0:
            return 0
        end = self._pos + n
        if end > self._size:
            raise _PastEnd("read past the end of a header")
        self._pos = end
        return (self._value >> (self._size - end)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        """An unsigned exp-Golomb code (9.1)."""
        left = self._size - self._pos
        # The leading zeros are the bits above the highest set bit of what is left.
        zeros = left - (self._value & ((1 << left) - 1)).bit_length()
        if zeros > 31 or zeros == left:
            raise _PastEnd("an exp-Golomb code longer than 32 bits or past the end")
        self._pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        """A signed exp-Golomb code (9.1.1)."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def rbsp(nal: bytes) -> bytes:
    """A NAL unit's payload without its header byte and emulation prevention bytes."""
    # Non-overlapping left-to-right replacement is exactly 7.4.1's removal: after an
    # 0x000003 the count of zero bytes starts again.
    return nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")


def annexb_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (start-code delimited, as in MPEG-TS)."""
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        start = data.find(b"\x00\x00\x01", begin)
        # A four-byte start code and trailing_zero_8bits leave zeros before the next one.
        unit = (data[begin:] if start < 0 else data[begin:start]).rstrip(b"\x00")
        if unit:
            yield unit


def length_prefixed_units(data: bytes, length_size: int) -> Iterator[bytes]:
    """The NAL units of an MP4 sample: each preceded by its length in ``length_size`` bytes."""
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise ValueError("a NAL unit length cut short")
        n = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if n == 0 or pos + n > len(data):
            raise ValueError("a NAL unit length past the end of its sample")
        yield data[pos : pos + n]
        pos += n


@dataclass(frozen=True, slots=True)
class Sps:
    """What a sequence parameter set says about picture size and order."""

    sps_id: int
    width: int
    height: int
    macroblocks: int
    bit_depth_luma: int
    chroma_array_type: int
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    gaps_allowed: bool
    #: Cropping of the left and top edges, in luma samples (decoders may realign these).
    crop_left: int
    crop_top: int
    #: max_num_reorder_frames when the VUI gives it (bitstream_restriction_flag), else None.
    max_reorder: int | None
    bit_depth_chroma: int = 8


@dataclass(frozen=True, slots=True)
class Pps:
    """The fields of a picture parameter set that the slice header's syntax depends on."""

    pps_id: int
    sps_id: int
    cabac: bool
    bottom_field_pic_order: bool
    num_ref_idx_l0: int
    num_ref_idx_l1: int
    weighted_pred: bool
    weighted_bipred_idc: int
    #: pic_init_qp_minus26 + 26.
    pic_init_qp: int
    deblocking_control: bool


@dataclass(frozen=True, slots=True)
class SliceHeader:
    """What a slice header says about the picture it belongs to."""

    first_mb: int
    slice_type: int
    pps_id: int
    frame_num: int
    poc_lsb: int
    delta_poc_bottom: int
    #: memory_management_control_operation 5: the picture resets frame_num and POC.
    mmco5: bool
    no_output_of_prior_pics: bool


def parse_sps(nal: bytes) -> Sps:
    """The size (cropped, as a decoder outputs it) and ordering fields of an SPS NAL unit."""
    r = BitReader(rbsp(nal))
    profile_idc = r.u(8)
    r.u(16)  # constraint flags, level_idc
    sps_id = r.ue()
    chroma_format_idc = 1
    bit_depth_luma = 8
    separate_planes = False
    bit_depth_chroma = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise ValueError(f"chroma_format_idc {chroma_format_idc}")
        if chroma_format_idc == 3:
            separate_planes = r.flag()
        bit_depth_luma = r.ue() + 8
        if bit_depth_luma > 14:
            raise ValueError(f"bit_depth_luma {bit_depth_luma}")
        bit_depth_chroma = r.ue() + 8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    if separate_planes:
        raise ValueError("separate colour planes (three slices per picture)")
    log2_max_frame_num = r.ue() + 4
    poc_type = r.ue()
    log2_max_poc_lsb = 0
    if poc_type == 0:
        log2_max_poc_lsb = r.ue() + 4
    elif poc_type != 2:
        raise ValueError(f"pic_order_cnt_type {poc_type}")
    r.ue()  # max_num_ref_frames
    gaps_allowed = r.flag()
    width_mbs, height_mbs = r.ue() + 1, r.ue() + 1
    width, height = width_mbs * 16, height_mbs * 16
    if not r.flag():  # frame_mbs_only_flag
        raise ValueError("an interlaced or field-coded stream")
    r.u(1)  # direct_8x8_inference_flag
    crop_left = crop_top = 0
    if r.flag():  # frame_cropping_flag
        # 7.4.2.1.1: crop offsets count chroma samples (luma for 4:4:4 and monochrome).
        unit_x = 2 if chroma_format_idc in (1, 2) else 1
        unit_y = 2 if chroma_format_idc == 1 else 1
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        crop_left, crop_top = unit_x * left, unit_y * top
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
        if width <= 0 or height <= 0:
            raise ValueError("cropping larger than the picture")
    max_reorder = _vui_max_reorder(r) if r.flag() else None
    return Sps(
        sps_id,
        width,
        height,
        width_mbs * height_mbs,
        bit_depth_luma,
        chroma_format_idc,
        log2_max_frame_num,
        poc_type,
        log2_max_poc_lsb,
        gaps_allowed,
        crop_left,
        crop_top,
        max_reorder,
        bit_depth_chroma,
    )


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last + r.se() + 256) % 256
        last = next_scale or last


def _vui_max_reorder(r: BitReader) -> int | None:
    """max_num_reorder_frames from vui_parameters (E.1.1), None without bitstream_restriction."""
    # aspect_ratio_info_present_flag, then aspect_ratio_idc: Extended_SAR has the ratio.
    if r.flag() and r.u(8) == 255:
        r.u(32)
    if r.flag():  # overscan_info_present_flag
        r.u(1)
    if r.flag():  # video_signal_type_present_flag
        r.u(4)
        if r.flag():  # colour_description_present_flag
            r.u(24)
    if r.flag():  # chroma_loc_info_present_flag
        r.ue()
        r.ue()
    if r.flag():  # timing_info_present_flag
        r.u(65)
    nal_hrd = r.flag()
    if nal_hrd:
        _skip_hrd(r)
    vcl_hrd = r.flag()
    if vcl_hrd:
        _skip_hrd(r)
    if nal_hrd or vcl_hrd:
        r.u(1)  # low_delay_hrd_flag
    r.u(1)  # pic_struct_present_flag
    if not r.flag():  # bitstream_restriction_flag
        return None
    r.u(1)  # motion_vectors_over_pic_boundaries_flag
    for _ in range(4):  # max bytes/bits denominators, log2 max mv lengths
        r.ue()
    return r.ue()


def _skip_hrd(r: BitReader) -> None:
    count = r.ue() + 1
    if count > 32:
        raise ValueError("cpb_cnt_minus1 above 31")
    r.u(8)  # bit_rate_scale, cpb_size_scale
    for _ in range(count):
        r.ue()
        r.ue()
        r.u(1)
    r.u(20)  # four 5-bit delay lengths


def parse_pps(nal: bytes) -> Pps:
    """The fields of a PPS NAL unit that slice headers need."""
    r = BitReader(rbsp(nal))
    pps_id, sps_id = r.ue(), r.ue()
    if pps_id > 255 or sps_id > 31:
        raise ValueError(f"PPS {pps_id} of SPS {sps_id}")
    cabac = r.flag()
    bottom_field_pic_order = r.flag()
    if r.ue() != 0:
        raise ValueError("slice groups (flexible macroblock ordering)")
    l0, l1 = r.ue() + 1, r.ue() + 1
    weighted_pred = r.flag()
    weighted_bipred_idc = r.u(2)
    pic_init_qp = r.se() + 26
    r.se()  # pic_init_qs_minus26
    chroma_qp_index_offset = r.se()
    if max(l0, l1) > 32 or weighted_bipred_idc == 3 or not -12 <= chroma_qp_index_offset <= 12:
        raise ValueError("a PPS field out of its range")
    deblocking_control = r.flag()
    r.u(1)  # constrained_intra_pred_flag
    if r.flag():
        # Redundant pictures are dropped by a decoder that has the primary one: packets
        # and pictures would no longer be one to one.
        raise ValueError("redundant pictures")
    return Pps(
        pps_id,
        sps_id,
        cabac,
        bottom_field_pic_order,
        l0,
        l1,
        weighted_pred,
        weighted_bipred_idc,
        pic_init_qp,
        deblocking_control,
    )


def parse_slice_header(nal: bytes, sps: Sps, pps_by_id: Mapping[int, Pps]) -> SliceHeader:
    """A slice NAL unit's header (7.3.3), for a frame-only SPS and the PPS it names (of those
    seen so far). A value outside the range H.264 gives it raises ValueError: a decoder drops
    the slice, so the picture may never be output. SP and SI slices and long-term references
    are not followed."""
    try:
        return _slice_header(nal[:_SHORT_HEADER_BYTES], sps, pps_by_id)
    except _PastEnd:
        if len(nal) <= _SHORT_HEADER_BYTES:
            raise
    return _slice_header(nal[:_HEADER_BYTES], sps, pps_by_id)


def _slice_header(nal: bytes, sps: Sps, pps_by_id: Mapping[int, Pps]) -> SliceHeader:
    nal_ref_idc = (nal[0] >> 5) & 3
    idr = nal[0] & 0x1F == NAL_IDR
    r = BitReader(rbsp(nal))
    first_mb = r.ue()
    if first_mb >= sps.macroblocks:
        raise ValueError(f"first_mb_in_slice {first_mb} past the picture")
    slice_type = r.ue()
    if slice_type > 9 or slice_type % 5 in (_SP, _SI):
        raise ValueError(f"slice_type {slice_type}")
    slice_type %= 5
    pps_id = r.ue()
    pps = pps_by_id.get(pps_id)
    if pps is None or pps.sps_id != sps.sps_id:
        raise ValueError(f"a slice names PPS {pps_id}, not one of its SPS's")
    frame_num = r.u(sps.log2_max_frame_num)
    if idr and r.ue() > 65535:  # idr_pic_id
        raise ValueError("idr_pic_id above 65535")
    poc_lsb = delta_poc_bottom = 0
    if sps.poc_type == 0:
        poc_lsb = r.u(sps.log2_max_poc_lsb)
        if pps.bottom_field_pic_order:
            delta_poc_bottom = r.se()
    if slice_type == _B:
        r.u(1)  # direct_spatial_mv_pred_flag
    l0, l1 = pps.num_ref_idx_l0, pps.num_ref_idx_l1
    if slice_type in (_P, _B) and r.flag():  # num_ref_idx_active_override_flag
        l0 = r.ue() + 1
        if slice_type == _B:
            l1 = r.ue() + 1
    if slice_type != _B:
        l1 = 0
    if slice_type == _I:
        l0 = 0
    if max(l0, l1) > 16:  # for frames (7.4.3)
        raise ValueError("num_ref_idx_active above 16")
    max_pic_num = 1 << sps.log2_max_frame_num
    _skip_list_modification(r, l0, max_pic_num)
    _skip_list_modification(r, l1, max_pic_num)
    if (pps.weighted_pred and slice_type == _P) or (
        pps.weighted_bipred_idc == 1 and slice_type == _B
    ):
        _skip_weight_table(r, sps.chroma_array_type, l0, l1)
    mmco5 = no_output = False
    if nal_ref_idc:
        if idr:
            no_output = r.flag()
            r.u(1)  # long_term_reference_flag
        elif r.flag():  # adaptive_ref_pic_marking_mode_flag
            for _ in range(66):
                op = r.ue()
                if op == 0:
                    break
                if op not in (1, 5):
                    raise ValueError(f"memory_management_control_operation {op}")
                mmco5 |= op == 5
                if op == 1:
                    r.ue()  # difference_of_pic_nums_minus1
            else:
                raise ValueError("more than 66 memory management operations")
    if pps.cabac and slice_type != _I and r.ue() > 2:
        raise ValueError("cabac_init_idc above 2")
    qp = pps.pic_init_qp + r.se()
    if not 0 <= qp <= 51 + 6 * (sps.bit_depth_luma - 8):
        raise ValueError(f"slice QP {qp}")
    if pps.deblocking_control:
        idc = r.ue()
        if idc > 2:
            raise ValueError(f"disable_deblocking_filter_idc {idc}")
        if idc != 1 and not (-6 <= r.se() <= 6 and -6 <= r.se() <= 6):
            raise ValueError("deblocking filter offsets out of range")
    return SliceHeader(
        first_mb, slice_type, pps_id, frame_num, poc_lsb, delta_poc_bottom, mmco5, no_output
    )


def _skip_list_modification(r: BitReader, count: int, max_pic_num: int) -> None:
    """ref_pic_list_modification for one list of ``count`` references (none: not present)."""
    if not count or not r.flag():  # ref_pic_list_modification_flag_lX
        return
    for _ in range(count + 1):
        idc = r.ue()
        if idc == 3:
            return
        if idc > 1:
            raise ValueError(f"modification_of_pic_nums_idc {idc}")
        if r.ue() >= max_pic_num:  # abs_diff_pic_num_minus1
            raise ValueError("abs_diff_pic_num above MaxPicNum")
    raise ValueError("more reference list changes than references")


def _skip_weight_table(r: BitReader, chroma_array_type: int, l0: int, l1: int) -> None:
    if r.ue() > 7:  # luma_log2_weight_denom
        raise ValueError("luma_log2_weight_denom above 7")
    if chroma_array_type and r.ue() > 7:  # chroma_log2_weight_denom
        raise ValueError("chroma_log2_weight_denom above 7")
    for _ in range(l0 + l1):
        if r.flag():  # luma_weight_flag: a weight and an offset
            _weight(r)
            _weight(r)
        if chroma_array_type and r.flag():  # chroma_weight_flag: two of each
            for _ in range(4):
                _weight(r)


def _weight(r: BitReader) -> None:
    if not -128 <= r.se() <= 127:
        raise ValueError("a prediction weight or offset out of range")


def sei_payload_types(nal: bytes) -> Iterator[int]:
    """The payloadType of each SEI message in an SEI NAL unit (7.3.2.3)."""
    data = rbsp(nal)
    pos = 0
    # The last byte is rbsp_trailing_bits; a message needs at least two bytes.
    while pos + 1 < len(data) and data[pos] != 0x80:
        kind = 0
        while data[pos] == 0xFF:
            kind += 255
            pos += 1
        kind += data[pos]
        pos += 1
        size = 0
        while pos < len(data) and data[pos] == 0xFF:
            size += 255
            pos += 1
        if pos >= len(data):
            raise ValueError("an SEI message cut short")
        size += data[pos]
        pos += 1 + size
        if pos > len(data):
            raise ValueError("an SEI message past the end of its NAL unit")
        yield kind
