"""go-livepeer's wire forms: gRPC message framing, profiles and capability bits.

A gRPC message on an HTTP/2 stream is a 1-byte compressed flag, a 4-byte big-endian length and
the protobuf bytes. Profiles travel as ``net.VideoProfile`` in ``SegData.fullProfiles*``, in the
field go-livepeer's orchestrator would choose for the ladder (``NetSegData``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from farm.errors import ProfileInvalid
from farm.golivepeer import net_pb2
from farm.media.profiles import VideoProfile

__all__ = [
    "DECODER_CAPABILITY",
    "DEFAULT_CAPABILITIES",
    "ENCODER_CAPABILITY",
    "FrameError",
    "MessageReader",
    "capability_bits",
    "capability_words",
    "frame",
    "from_net_profiles",
    "job_capabilities",
    "seg_data_profiles",
    "to_net_profile",
]

#: go-livepeer's DefaultCapabilities: H264, MPEGTS, MP4, fractional frame rates, storage,
#: H.264 profiles, GOP, AuthToken (0-12), MPEG-7 signature (14), segment slicing (26).
DEFAULT_CAPABILITIES = (*range(13), 14, 26)
#: Capability ids of the encoders a job may ask for: exactly the encoders go-livepeer's
#: protocol has (farm.queues.GOLIVEPEER_CODECS); AV1 is none of them.
ENCODER_CAPABILITY = {"H.264": 0, "HEVC": 16, "VP9": 20}
#: Capability ids of the input codecs a transcoder must decode (H.264 is the base capability).
DECODER_CAPABILITY = {"h264": 0, "hevc": 15, "vp8": 17, "vp9": 18}
_FORMAT_CAPABILITY = {"mpegts": 1, "mp4": 2}
_FRACTIONAL_FPS, _GOP = 3, 11
_PROFILE_CAPABILITY = {"h264baseline": 7, "h264main": 8, "h264high": 9, "h264constrainedhigh": 10}

_PROFILES = {
    "": net_pb2.VideoProfile.ENCODER_DEFAULT,
    "none": net_pb2.VideoProfile.ENCODER_DEFAULT,
    "h264baseline": net_pb2.VideoProfile.H264_BASELINE,
    "h264main": net_pb2.VideoProfile.H264_MAIN,
    "h264high": net_pb2.VideoProfile.H264_HIGH,
    "h264constrainedhigh": net_pb2.VideoProfile.H264_CONSTRAINED_HIGH,
}
#: go-livepeer's VideoProfile.encoder values (H264 0, H265 1, VP8 2, VP9 3) for the farm's
#: encoder families; nothing else may go on the wire.
_ENCODERS = {
    "H.264": net_pb2.VideoProfile.H264,
    "HEVC": net_pb2.VideoProfile.H265,
    "VP9": net_pb2.VideoProfile.VP9,
}
_FORMATS = {"mpegts": net_pb2.VideoProfile.MPEGTS, "mp4": net_pb2.VideoProfile.MP4}
#: go-livepeer's intra-only GOP marker.
GOP_INTRA = -1
_HEADER = struct.Struct(">BI")


class FrameError(ValueError):
    """Raised when a gRPC message frame is malformed, compressed or too large."""


def frame(message: bytes) -> bytes:
    """One length-prefixed, uncompressed gRPC message."""
    return _HEADER.pack(0, len(message)) + message


class MessageReader:
    """Splits a byte stream into gRPC messages."""

    def __init__(self, max_bytes: int = 4 << 20) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``."""
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= _HEADER.size:
            compressed, length = _HEADER.unpack_from(self._buffer)
            if compressed:
                raise FrameError("compressed gRPC messages are not accepted")
            if length > self.max_bytes:
                raise FrameError(f"gRPC message of {length} bytes exceeds {self.max_bytes}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            out.append(bytes(self._buffer[_HEADER.size : end]))
            del self._buffer[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message still buffered."""
        return len(self._buffer)


def capability_words(ids: Iterable[int]) -> list[int]:
    """Capability ids as go-livepeer's ``bitstring``: 64 capabilities per uint64 word."""
    words: list[int] = []
    for i in ids:
        while len(words) <= i // 64:
            words.append(0)
        words[i // 64] |= 1 << (i % 64)
    return words


def capability_bits(words: Sequence[int]) -> set[int]:
    """The capability ids set in a ``bitstring``."""
    return {w * 64 + b for w, word in enumerate(words) for b in range(64) if word >> b & 1}


def _unsupported_encoder(encoder: str) -> ProfileInvalid:
    have = ", ".join(ENCODER_CAPABILITY)
    return ProfileInvalid(f"go-livepeer transcoders cannot encode {encoder} (they have {have})")


def job_capabilities(
    profiles: Sequence[VideoProfile], fmt: str, input_codec: str | None = None
) -> set[int]:
    """The capability ids a ladder needs, as go-livepeer's segment capabilities state them:
    the output format, each encoder (ProfileInvalid for one go-livepeer has not), H.264
    profiles, GOP and fractional rates, and the decoder of ``input_codec`` (an ffmpeg codec
    name) when given."""
    if fmt not in _FORMAT_CAPABILITY:
        raise ProfileInvalid(f"go-livepeer transcoders write mpegts or mp4, not {fmt!r}")
    needs = {_FORMAT_CAPABILITY[fmt]}
    if input_codec is not None:
        if input_codec not in DECODER_CAPABILITY:
            raise ProfileInvalid(f"go-livepeer transcoders cannot decode {input_codec} input")
        needs.add(DECODER_CAPABILITY[input_codec])
    for p in profiles:
        if p.encoder not in ENCODER_CAPABILITY:
            raise _unsupported_encoder(p.encoder)
        needs.add(ENCODER_CAPABILITY[p.encoder])
        if p.profile in _PROFILE_CAPABILITY:
            needs.add(_PROFILE_CAPABILITY[p.profile])
        if p.gop:
            needs.add(_GOP)
        if p.fps and p.fps_den != 1:
            needs.add(_FRACTIONAL_FPS)
    return needs


def to_net_profile(p: VideoProfile, fmt: str) -> net_pb2.VideoProfile:
    """A profile in go-livepeer's wire form (GOP in milliseconds, -1 for intra-only)."""
    if fmt not in _FORMATS:
        raise ProfileInvalid(f"go-livepeer transcoders write mpegts or mp4, not {fmt!r}")
    if p.encoder not in _ENCODERS:
        raise _unsupported_encoder(p.encoder)
    if p.profile not in _PROFILES:
        raise ProfileInvalid(f"go-livepeer has no wire form for profile {p.profile!r}")
    gop = 0
    if p.intra_only:
        gop = GOP_INTRA
    elif p.gop_seconds is not None:
        gop = round(p.gop_seconds * 1000)
    return net_pb2.VideoProfile(
        name=p.name,
        width=p.width,
        height=p.height,
        bitrate=p.bitrate,
        fps=p.fps,
        fpsDen=p.fps_den if p.fps and p.fps_den != 1 else 0,
        format=_FORMATS[fmt],
        profile=_PROFILES[p.profile],
        gop=gop,
        encoder=_ENCODERS[p.encoder],
    )


def seg_data_profiles(seg: net_pb2.SegData, profiles: Sequence[VideoProfile], fmt: str) -> None:
    """Put ``profiles`` in the ``fullProfiles*`` field go-livepeer's orchestrator would use."""
    wire = [to_net_profile(p, fmt) for p in profiles]
    plain = all(w.fpsDen == 0 and w.profile == 0 and w.gop == 0 for w in wire)
    if plain and fmt == "mpegts":
        seg.fullProfiles.extend(wire)
    elif plain:
        seg.fullProfiles2.extend(wire)
    else:
        seg.fullProfiles3.extend(wire)


def from_net_profiles(seg: net_pb2.SegData) -> tuple[list[VideoProfile], str]:
    """The ladder and output format a ``SegData`` asks for (fullProfiles3 first)."""
    wire = list(seg.fullProfiles3 or seg.fullProfiles2 or seg.fullProfiles)
    if not wire:
        raise ProfileInvalid("the segment carries no profiles")
    formats = {w.format for w in wire}
    if len(formats) != 1:
        raise ProfileInvalid("profiles ask for mixed output formats")
    fmt = {v: k for k, v in _FORMATS.items()}.get(formats.pop())
    if fmt is None:
        raise ProfileInvalid("unrecognized profile output format")
    names = {v: k for k, v in _PROFILES.items() if k != "none"}
    encoders = {v: k for k, v in _ENCODERS.items()}
    ladder = []
    for w in wire:
        if w.profile not in names:
            raise ProfileInvalid(f"{w.name}: unrecognized encoder profile {w.profile}")
        if w.encoder not in encoders:
            raise ProfileInvalid(f"{w.name}: unsupported video codec {w.encoder}")
        gop = "intra" if w.gop < 0 else (f"{w.gop / 1000:g}" if w.gop else "")
        ladder.append(
            VideoProfile(
                name=w.name,
                width=w.width,
                height=w.height,
                bitrate=w.bitrate,
                fps=w.fps,
                fps_den=w.fpsDen or 1,
                profile=names[w.profile],
                gop=gop,
                encoder=encoders[w.encoder],
            )
        )
    return ladder, fmt
