"""Which encoders and decoders really work on this machine.

The av wheel lists NVENC and CUVID codecs whether or not a GPU is present, so availability
is decided by opening a codec context, once per process, and remembering the answer.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction

import av

__all__ = [
    "CPU_ENCODERS",
    "GPU_DECODERS",
    "GPU_ENCODERS",
    "EncoderChoice",
    "choose_encoder",
    "codec_name",
    "decoder_opens",
    "encoder_opens",
    "hardware_report",
]

log = logging.getLogger(__name__)
# SVT-AV1 prints its banner straight to stderr unless told otherwise, and the library takes
# its log level from the environment only; setdefault leaves an operator's own level alone.
os.environ.setdefault("SVT_LOG", "1")

#: Livepeer codec family -> software encoder.
CPU_ENCODERS = {"H.264": "libx264", "HEVC": "libx265", "AV1": "libsvtav1", "VP9": "libvpx-vp9"}
#: Livepeer codec family -> NVENC encoder.
GPU_ENCODERS = {"H.264": "h264_nvenc", "HEVC": "hevc_nvenc", "AV1": "av1_nvenc"}
#: Input codec name -> NVDEC (cuvid) decoder.
GPU_DECODERS = {
    "h264": "h264_cuvid",
    "hevc": "hevc_cuvid",
    "av1": "av1_cuvid",
    "vp9": "vp9_cuvid",
    "mpeg2video": "mpeg2_cuvid",
}
#: Livepeer codec family -> the name of the codec it encodes, as a decoder knows it.
FAMILY_CODECS = {"H.264": "h264", "HEVC": "hevc", "AV1": "av1", "VP9": "vp9"}
#: Options that stop encoders which print straight to stderr from doing so.
QUIET_OPTIONS: dict[str, dict[str, str]] = {
    "libx265": {"x265-params": "log-level=error"},
    "libsvtav1": {"svtav1-params": "log-level=1"},
}


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    """The encoder picked for a codec family, and whether it runs on the GPU."""

    family: str
    codec: str
    hardware: bool


def codec_name(stream: av.stream.Stream) -> str:
    """The name of the codec a stream holds ("av1"), not of the decoder FFmpeg picked for it
    ("libdav1d" decodes AV1, "mp3float" MP3)."""
    ctx = stream.codec_context
    if ctx is None:  # a stream of a codec FFmpeg does not know
        return ""
    return str(ctx.codec.canonical_name if ctx.codec is not None else ctx.name)


def _quiet_open(ctx: av.CodecContext) -> None:
    # Failed hardware opens log loudly at error level in libav; keep probing quiet.
    with av.logging.Capture():
        ctx.open()


@functools.cache
def encoder_opens(name: str) -> bool:
    """True when the named encoder opens on this machine (listed is not usable)."""
    try:
        ctx = av.CodecContext.create(name, "w")
    except (av.FFmpegError, ValueError) as e:
        log.debug("encoder %s not in this build: %s", name, e)
        return False
    try:
        ctx.width, ctx.height = 256, 144  # type: ignore[attr-defined]
        ctx.pix_fmt = "yuv420p"  # type: ignore[attr-defined]
        ctx.time_base = Fraction(1, 30)
        ctx.options = dict(QUIET_OPTIONS.get(name, {}))
        _quiet_open(ctx)
    except (av.FFmpegError, OSError, ValueError) as e:
        log.debug("encoder %s does not open: %s", name, e)
        return False
    return True


@functools.cache
def decoder_opens(name: str) -> bool:
    """True when the named decoder opens on this machine."""
    try:
        ctx = av.CodecContext.create(name, "r")
        _quiet_open(ctx)
    except (av.FFmpegError, OSError, ValueError) as e:
        log.debug("decoder %s does not open: %s", name, e)
        return False
    return True


@functools.cache
def nvdec_opens(codec: str) -> bool:
    """True when this machine has an NVDEC decoder for ``codec`` that opens (checked once)."""
    name = GPU_DECODERS.get(codec)
    return name is not None and decoder_opens(name)


def choose_encoder(family: str, prefer_gpu: bool = True) -> EncoderChoice | None:
    """The best encoder for a codec family: NVENC where it opens, else the software one."""
    if prefer_gpu:
        gpu = GPU_ENCODERS.get(family)
        if gpu and encoder_opens(gpu):
            return EncoderChoice(family, gpu, True)
    cpu = CPU_ENCODERS.get(family)
    if cpu and encoder_opens(cpu):
        return EncoderChoice(family, cpu, False)
    return None


def hardware_report() -> dict[str, dict[str, bool]]:
    """Every NVENC/NVDEC codec this build lists, with whether it opens here."""
    return {
        "encoders": {name: encoder_opens(name) for name in GPU_ENCODERS.values()},
        "decoders": {name: decoder_opens(name) for name in GPU_DECODERS.values()},
        "cpu_encoders": {name: encoder_opens(name) for name in CPU_ENCODERS.values()},
    }
