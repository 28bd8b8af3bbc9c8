"""Counting a rendition's pixels as a decoder outputs them: Σ width x height over its frames.

go-livepeer's gateway checks an orchestrator's claimed pixels by decoding every rendition
(:func:`decoded_pixels`). For H.264 the same number can be had from the demuxed packets
alone (:func:`demuxed_pixels`): each packet is one access unit, so one picture, of the size
the one SPS gives. That is only true of well-formed streams, so the demuxed count answers
None wherever the decoder could output a different number of frames, or frames of another
size, and :func:`rendition_pixels` then decodes. The count falls back when:

- the video is not H.264, or the stream has more than one distinct SPS (a size change), or
  more than one PPS of an id;
- the SPS is interlaced, crops the left or top edge (FFmpeg realigns those), or its
  cropped size is not the size the demuxer reports, or the demuxer's probe decoded no picture;
- a packet is flagged corrupt or discardable, holds other than exactly one picture, or any
  header in it does not parse or holds a value out of its range (a decoder drops such a
  slice);
- the first picture is not an IDR (a decoder drops what comes before a keyframe), a later
  one breaks frame_num's sequence, resets with MMCO 5 or an IDR that drops prior pictures,
  or a recovery point SEI makes a non-IDR picture a keyframe;
- the pictures reorder deeper than the SPS's max_num_reorder_frames (or at all, without
  one): FFmpeg's H.264 decoder drops a picture that comes out after a later one.

Everything else about a picture is trusted: a slice whose header parses but whose data is
damaged is concealed and still output by the decoder, so it counts as a frame either way.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator
from typing import NamedTuple

import av

from farm.errors import InputCorrupt, InputInvalid
from farm.media import h264, ts

__all__ = ["PixelCount", "decoded_pixels", "demuxed_pixels", "rendition_pixels"]

#: Beyond this depth FFmpeg's H.264 decoder takes a picture for an order reset (its
#: ``last_pocs`` window holds 16): deeper reordering is never trusted.
_MAX_REORDER = 15


class PixelCount(NamedTuple):
    """A rendition's last frame size, its frame count and Σ width x height over its frames."""

    width: int
    height: int
    frames: int
    pixels: int


def rendition_pixels(data: bytes, fmt: str) -> PixelCount:
    """The pixels a decoder outputs for a rendition: from its packets where that is sure,
    else by decoding; InputInvalid or InputCorrupt when it does not decode."""
    counted = demuxed_pixels(data, fmt)
    return counted if counted is not None else decoded_pixels(data, fmt)


def decoded_pixels(data: bytes, fmt: str) -> PixelCount:
    """The pixels of a rendition's decoded video frames, every frame decoded;
    InputInvalid when it has no video, InputCorrupt when it does not decode."""
    width = height = frames = pixels = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=fmt) as container:
            if not container.streams.video:
                raise InputInvalid("a rendition has no video")
            if container.streams.video[0].codec_context is None:
                raise InputCorrupt("a rendition's video is in no codec this build knows")
            # Counting pictures needs them decoded, not deblocked. One thread per rendition,
            # so a frame cut short is counted the same way every time.
            container.streams.video[0].codec_context.options = {
                "skip_loop_filter": "all",
                "threads": "1",
            }
            for picture in container.decode(video=0):
                width, height = picture.width, picture.height
                frames += 1
                pixels += picture.width * picture.height
    except (av.FFmpegError, ValueError, IndexError) as e:
        raise InputCorrupt(f"a rendition does not decode: {e}") from e
    return PixelCount(width, height, frames, pixels)


def demuxed_pixels(data: bytes, fmt: str) -> PixelCount | None:
    """What :func:`decoded_pixels` gives, read from an H.264 rendition's packets without
    decoding them; None when that count could differ from the decoder's (see the module)."""
    if fmt == "mpegts":
        counted = _plain_ts_pixels(data)
        if counted is not None:
            return counted
    try:
        with av.open(io.BytesIO(data), mode="r", format=fmt) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx is None or ctx.name != "h264":
                return None
            order = _PictureOrder()
            length_size = order.extradata(bytes(ctx.extradata or b""))
            ended = False
            for packet in container.demux(stream):
                if packet.size == 0:
                    # The demuxer's end-of-stream packet: it drains the decoder, no picture.
                    ended = True
                    continue
                if ended or packet.is_corrupt or packet.is_discard:
                    return None
                blob = bytes(packet)
                order.packet(
                    h264.length_prefixed_units(blob, length_size)
                    if length_size
                    else h264.annexb_units(blob)
                )
            if ctx.pix_fmt is None:
                # The demuxer's probe decoded no picture: the decoder refuses the stream's
                # parameters, whatever they say.
                return None
            return order.count(ctx.width, ctx.height)
    except (av.FFmpegError, ValueError, IndexError):
        return None


def _plain_ts_pixels(data: bytes) -> PixelCount | None:
    """The count of a plain transport stream (farm.media.ts), read without FFmpeg's demuxer:
    each PES one packet, and the SPS's size the decoder's. None (FFmpeg's demuxer then
    reads it) for any other stream, and for an SPS whose pictures a decoder might refuse:
    only 8-bit 4:2:0 in sizes FFmpeg takes, what every transcoder outputs, is read here."""
    payloads = ts.h264_pes(data)
    if payloads is None:
        return None
    order = _PictureOrder()
    try:
        for payload in payloads:
            order.packet(h264.annexb_units(payload))
        sps = order.sps
        if sps is None or (sps.bit_depth_luma, sps.bit_depth_chroma, sps.chroma_array_type) != (
            8,
            8,
            1,
        ):
            return None
        if not (0 < sps.width <= 16384 and 0 < sps.height <= 16384):
            return None
        return order.count(sps.width, sps.height)
    except (ValueError, IndexError):
        return None


class _PictureOrder:
    """Follows a stream's pictures through their headers: one per packet, in an order that
    a decoder outputs whole. Raises ValueError at the first thing it cannot be sure of."""

    def __init__(self) -> None:
        self.sps_nal: bytes | None = None
        self.sps: h264.Sps | None = None
        self.pps: dict[int, h264.Pps] = {}
        self._pps_nals: dict[int, bytes] = {}
        self.frames = 0
        self.depth = 0
        # Picture order counts so far in the current IDR period, sorted.
        self._period: list[int] = []
        self._prev_ref_frame_num = 0
        self._prev_frame_num = 0
        self._frame_num_offset = 0
        self._prev_poc_msb = self._prev_poc_lsb = 0

    def extradata(self, extradata: bytes) -> int:
        """Take in the parameter sets of the stream's extradata; the NAL length size of MP4
        samples (0 for an Annex B stream)."""
        if extradata[:1] == b"\x01":
            # An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1): a decoder refuses
            # one whose lengths overrun it, so the count does too.
            if len(extradata) < 7:
                raise ValueError("an avcC record cut short")
            length_size = (extradata[4] & 3) + 1
            pos = 5
            for count_bits in (0x1F, 0xFF):  # the SPS count, then the PPS count
                count = extradata[pos] & count_bits
                pos += 1
                for _ in range(count):
                    n = int.from_bytes(extradata[pos : pos + 2], "big")
                    if n == 0 or pos + 2 + n > len(extradata):
                        raise ValueError("an avcC parameter set past the end of its record")
                    self._parameter_set(extradata[pos + 2 : pos + 2 + n])
                    pos += 2 + n
            return length_size
        for nal in h264.annexb_units(extradata):
            self._parameter_set(nal)
        return 0

    def _parameter_set(self, nal: bytes) -> None:
        kind = nal[0] & 0x1F
        if kind == h264.NAL_SPS:
            nal = nal.rstrip(b"\x00")
            if self.sps_nal is None:
                self.sps, self.sps_nal = h264.parse_sps(nal), nal
            elif nal != self.sps_nal:
                raise ValueError("more than one SPS")
        elif kind == h264.NAL_PPS:
            # One PPS per id as well: a decoder that refuses a changed one keeps the old one,
            # and the slice headers would then be read with the other's fields.
            nal = nal.rstrip(b"\x00")
            pps = h264.parse_pps(nal)
            if self._pps_nals.setdefault(pps.pps_id, nal) != nal:
                raise ValueError(f"more than one PPS {pps.pps_id}")
            self.pps[pps.pps_id] = pps
        else:
            raise ValueError(f"NAL unit type {kind} among the parameter sets")

    def packet(self, units: Iterator[bytes]) -> None:
        """One packet's NAL units: they must hold exactly one picture."""
        first: tuple[int, int, h264.SliceHeader] | None = None
        for nal in units:
            if nal[0] & 0x80:
                raise ValueError("forbidden_zero_bit set")
            kind = nal[0] & 0x1F
            if kind in (h264.NAL_SLICE, h264.NAL_IDR):
                if self.sps is None:
                    raise ValueError("a slice before any SPS")
                header = h264.parse_slice_header(nal, self.sps, self.pps)
                ref = (nal[0] >> 5) & 3
                if first is None:
                    if header.first_mb != 0:
                        raise ValueError("a packet starts inside a picture")
                    first = (kind, ref, header)
                elif header.first_mb == 0 or (kind, bool(ref), _same(header)) != (
                    first[0],
                    bool(first[1]),
                    _same(first[2]),
                ):
                    raise ValueError("a packet holds more than one picture")
            elif kind in (h264.NAL_SPS, h264.NAL_PPS):
                if first is not None:
                    raise ValueError("a parameter set after a slice")
                self._parameter_set(nal)
            elif kind == h264.NAL_SEI:
                # A recovery point makes a decoder take a non-IDR picture for a keyframe.
                if 6 in h264.sei_payload_types(nal):
                    raise ValueError("a recovery point SEI")
            elif kind not in (9, 12):  # access unit delimiter, filler data
                raise ValueError(f"NAL unit type {kind}")
        if first is None:
            raise ValueError("a packet without a picture")
        self._picture(first[0] == h264.NAL_IDR, first[1] != 0, first[2])

    def _picture(self, idr: bool, ref: bool, header: h264.SliceHeader) -> None:
        assert self.sps is not None
        sps = self.sps
        max_frame_num = 1 << sps.log2_max_frame_num
        if header.mmco5:
            raise ValueError("memory_management_control_operation 5")
        if idr:
            if header.frame_num != 0:
                raise ValueError("an IDR picture with frame_num other than 0")
            if header.no_output_of_prior_pics and self.frames:
                raise ValueError("an IDR that drops the pictures before it")
            self._period = []
            self._frame_num_offset = 0
            self._prev_poc_msb = self._prev_poc_lsb = 0
        else:
            if not self.frames:
                raise ValueError("the first picture is not an IDR")
            if sps.gaps_allowed or header.frame_num != (self._prev_ref_frame_num + 1) % (
                max_frame_num
            ):
                raise ValueError("a gap in frame_num")
        if sps.poc_type == 0:
            # 8.2.1.1
            half = 1 << (sps.log2_max_poc_lsb - 1)
            lsb, msb = header.poc_lsb, self._prev_poc_msb
            if lsb < self._prev_poc_lsb and self._prev_poc_lsb - lsb >= half:
                msb += 2 * half
            elif lsb > self._prev_poc_lsb and lsb - self._prev_poc_lsb > half:
                msb -= 2 * half
            top = msb + lsb
            poc = min(top, top + header.delta_poc_bottom)
            if ref:
                self._prev_poc_msb, self._prev_poc_lsb = msb, lsb
        else:
            # 8.2.1.3: output order is decode order.
            if not idr and self._prev_frame_num > header.frame_num:
                self._frame_num_offset += max_frame_num
            poc = 0 if idr else 2 * (self._frame_num_offset + header.frame_num) - (not ref)
        self._prev_frame_num = header.frame_num
        if ref:
            self._prev_ref_frame_num = header.frame_num
        # How many pictures decoded before this one are shown after it.
        self.depth = max(self.depth, len(self._period) - bisect.bisect_right(self._period, poc))
        bisect.insort(self._period, poc)
        self.frames += 1

    def count(self, width: int, height: int) -> PixelCount:
        """The count, once every packet is in; the size is the demuxer's, which must be the
        SPS's."""
        sps = self.sps
        if sps is None or not self.frames:
            raise ValueError("no pictures")
        if sps.crop_left or sps.crop_top:
            raise ValueError("cropping of the left or top edge")
        if (sps.width, sps.height) != (width, height):
            raise ValueError(f"SPS size {sps.width}x{sps.height}, demuxer's {width}x{height}")
        if self.depth > min(sps.max_reorder or 0, _MAX_REORDER):
            raise ValueError(f"pictures reordered {self.depth} deep")
        return PixelCount(width, height, self.frames, self.frames * width * height)


def _same(header: h264.SliceHeader) -> tuple[int, int, int, int, bool, bool]:
    """What every slice of one picture shares (7.4.3)."""
    return (
        header.pps_id,
        header.frame_num,
        header.poc_lsb,
        header.delta_poc_bottom,
        header.mmco5,
        header.no_output_of_prior_pics,
    )
