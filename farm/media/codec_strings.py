"""RFC 6381 codec strings of encoded media, for the CODECS attribute of HLS master playlists.

Each string is read from the stream itself, not from the profile that asked for it: the
H.264 profile, constraint flags and level from its SPS (``avc1.64001f``), HEVC's profile,
tier, level and constraints from its SPS or ``hvcC`` (``hvc1.1.6.L93.B0``), AV1's from its
``av1C`` (``av01.0.04M.08``), VP9's profile and bit depth with the level its picture size and
sample rate need (``vp09.00.21.08``), and the audio's (``mp4a.40.2`` for AAC-LC).
"""

from __future__ import annotations

import io
import re
from fractions import Fraction

import av

from farm.errors import InputInvalid

__all__ = ["codecs_of"]

_AAC = {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29", "Main": "mp4a.40.1"}
_AUDIO = {"mp3": "mp4a.40.34", "ac3": "ac-3", "eac3": "ec-3", "opus": "opus", "flac": "fLaC"}
#: VP9 levels: (level, max luma sample rate, max luma picture size), VP9 bitstream Annex A.
_VP9_LEVELS = (
    (10, 829_440, 36_864),
    (11, 2_764_800, 73_728),
    (20, 4_608_000, 122_880),
    (21, 9_216_000, 245_760),
    (30, 20_736_000, 552_960),
    (31, 36_864_000, 983_040),
    (40, 83_558_400, 2_228_224),
    (41, 160_432_128, 2_228_224),
    (50, 311_951_360, 8_912_896),
    (51, 588_251_136, 8_912_896),
    (52, 1_176_502_272, 8_912_896),
    (60, 1_176_502_272, 35_651_584),
    (61, 2_353_004_544, 35_651_584),
    (62, 4_706_009_088, 35_651_584),
)
_START = re.compile(b"\x00\x00\x01")


def codecs_of(data: bytes) -> str | None:
    """The CODECS value for a segment or file: its video's codec string, then its audio's.

    None when a stream's codec has no string here: a CODECS attribute must list every
    format in the variant, so a partial one would mislead a player more than none.

    Raises InputInvalid when the data is not a container FFmpeg can read.
    """
    try:
        with av.logging.Capture(), av.open(io.BytesIO(data), "r") as container:
            parts = [_video(s) for s in container.streams.video[:1]]
            parts += [_audio(s) for s in container.streams.audio[:1]]
    except av.FFmpegError as e:
        raise InputInvalid(f"cannot read the rendition's streams: {e}") from e
    if not parts or None in parts:
        return None
    return ",".join(p for p in parts if p is not None)


def _video(stream: av.VideoStream) -> str | None:
    ctx = stream.codec_context
    extradata = bytes(ctx.extradata or b"")
    if ctx.name == "h264":
        return _avc(extradata)
    if ctx.name == "hevc":
        return _hevc(extradata)
    if ctx.name in ("av1", "libdav1d", "libaom-av1"):
        return _av1(extradata)
    if ctx.name in ("vp9", "libvpx-vp9"):
        return _vp9(stream)
    return None


def _audio(stream: av.AudioStream) -> str | None:
    ctx = stream.codec_context
    if ctx.name == "aac":
        return _AAC.get(ctx.profile or "LC")
    return _AUDIO.get(ctx.name)


def _nal_units(annex_b: bytes) -> list[bytes]:
    return [n.rstrip(b"\x00") for n in _START.split(annex_b) if n.strip(b"\x00")]


def _unescape(nal: bytes) -> bytes:
    """A NAL unit's payload without its emulation prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _avc(extradata: bytes) -> str | None:
    # avcC (MP4): version 1, then profile, constraint flags, level. Annex B (MPEG-TS): the SPS.
    if extradata[:1] == b"\x01" and len(extradata) >= 4:
        fields = extradata[1:4]
    else:
        sps = [n for n in _nal_units(extradata) if n and n[0] & 0x1F == 7]
        if not sps or len(sps[0]) < 4:
            return None
        fields = sps[0][1:4]
    return "avc1." + fields.hex()


def _hevc(extradata: bytes) -> str | None:
    # The general profile_tier_level: 12 bytes after hvcC's version byte, or after the SPS's
    # two-byte NAL header and its first byte (VPS id, sub-layers, nesting flag).
    if extradata[:1] == b"\x01" and len(extradata) >= 13:
        ptl = extradata[1:13]
    else:
        sps = [n for n in _nal_units(extradata) if len(n) > 2 and (n[0] >> 1) & 0x3F == 33]
        if not sps:
            return None
        rbsp = _unescape(sps[0][2:])
        if len(rbsp) < 13:
            return None
        ptl = rbsp[1:13]
    space = "" if ptl[0] >> 6 == 0 else "ABC"[(ptl[0] >> 6) - 1]
    profile = ptl[0] & 0x1F
    tier = "H" if ptl[0] & 0x20 else "L"
    compatibility = int(f"{int.from_bytes(ptl[1:5], 'big'):032b}"[::-1], 2)
    constraints = list(ptl[5:11])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [f"hvc1.{space}{profile}", f"{compatibility:X}", f"{tier}{ptl[11]}"]
    return ".".join(parts + [f"{b:X}" for b in constraints])


def _av1(extradata: bytes) -> str | None:
    # av1C: marker and version, then seq_profile (3 bits) and seq_level_idx_0 (5), then
    # seq_tier_0, high_bitdepth, twelve_bit, ...
    if len(extradata) < 4 or extradata[0] != 0x81:
        return None
    profile, level = extradata[1] >> 5, extradata[1] & 0x1F
    tier = "H" if extradata[2] & 0x80 else "M"
    depth = 12 if extradata[2] & 0x20 else 10 if extradata[2] & 0x40 else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


def _vp9(stream: av.VideoStream) -> str | None:
    ctx = stream.codec_context
    match = re.fullmatch(r"Profile (\d)", ctx.profile or "")
    rate = stream.average_rate or stream.guessed_rate
    if match is None or not rate or not ctx.width or not ctx.height:
        return None
    depth = 10 if "10" in (ctx.format.name if ctx.format else "") else 8
    size = ctx.width * ctx.height
    samples = size * Fraction(rate)
    fits = [lv for lv, most, largest in _VP9_LEVELS if size <= largest and samples <= most]
    if not fits:
        return None
    return f"vp09.{int(match.group(1)):02d}.{fits[0]}.{depth:02d}"
