"""Opening and checking an input segment before any work is done on it."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
from av.codec.hwaccel import HWAccel
from av.stream import Disposition

from farm.errors import InputCorrupt, InputInvalid, InputTooLong, UnsupportedCodec
from farm.media.codecs import codec_name, nvdec_opens

__all__ = [
    "MAX_INPUT_SECONDS",
    "NETWORK_CODECS",
    "SUPPORTED_INPUT_CODECS",
    "Length",
    "Source",
    "main_video",
    "measure",
    "open_source",
]

log = logging.getLogger(__name__)

#: go-livepeer rejects inputs longer than this.
MAX_INPUT_SECONDS = 300.0
#: Video codecs a Livepeer orchestrator decodes (go-livepeer's decoder capabilities): what a
#: segment sent over the network may be.
NETWORK_CODECS = frozenset({"h264", "hevc", "vp8", "vp9"})
#: Video codecs the engine accepts as input: the network's, and what uploads to Studio carry
#: besides: broadcast and DVD MPEG-1/2, MPEG-4 Part 2 (DivX, Xvid, old phones), editing
#: masters (ProRes, DNxHD/DNxHR), cameras' Motion JPEG, and the older web and phone codecs
#: (H.263, Sorenson Spark, Windows Media 8, MS MPEG-4 v3), and animated GIF.
SUPPORTED_INPUT_CODECS = NETWORK_CODECS | frozenset(
    {
        "av1",
        "mpeg1video",
        "mpeg2video",
        "mpeg4",
        "prores",
        "dnxhd",
        "mjpeg",
        "h263",
        "flv1",
        "wmv2",
        "msmpeg4v3",
        "gif",
    }
)
_TS_PACKET_SIZES = (188, 192, 204)

SourceInput = bytes | bytearray | memoryview | str | Path


@dataclass(slots=True)
class Source:
    """An opened input: its container, streams, and what is known before decoding."""

    container: av.container.InputContainer
    video: av.VideoStream
    audio: av.AudioStream | None
    format_name: str
    size: int | None
    duration: float | None
    frame_rate: Fraction | None
    decoder: str
    #: Degrees clockwise (0, 90, 180 or 270) that the coded pictures turn to be shown upright,
    #: from the container's display matrix (a phone's portrait video is coded landscape).
    rotation: int = 0

    @property
    def portrait(self) -> bool:
        """Whether the picture is taller than wide as it is shown."""
        ctx = self.video.codec_context
        return (ctx.height > ctx.width) != (self.rotation in (90, 270))

    def close(self) -> None:
        self.container.close()


def _as_file(data: SourceInput) -> tuple[io.BytesIO | str, int | None, str]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if not raw:
            raise InputInvalid("input is empty (0 bytes)")
        return io.BytesIO(raw), len(raw), "input"
    path = Path(data)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputInvalid(f"cannot read input {path}: {e.strerror}") from e
    if not path.is_file():
        raise InputInvalid(f"input {path} is not a file")
    if size == 0:
        raise InputInvalid(f"input {path} is empty (0 bytes)")
    return str(path), size, str(path)


def _open(
    file: io.BytesIO | str, label: str, hwaccel: HWAccel | None
) -> av.container.InputContainer:
    try:
        with av.logging.Capture():
            return av.open(file, "r", hwaccel=hwaccel) if hwaccel else av.open(file, "r")
    except av.InvalidDataError as e:
        raise InputInvalid(
            f"{label} is not a media container FFmpeg can read ({e.strerror})"
        ) from e
    except av.FFmpegError as e:
        raise InputInvalid(f"{label} could not be opened: {e}") from e


def open_source(
    data: SourceInput,
    *,
    max_seconds: float = MAX_INPUT_SECONDS,
    gpu: int | None = None,
    find_rotation: bool = False,
) -> Source:
    """Open an input segment (bytes or a path) and check it is video the engine can take.

    With ``gpu`` set and NVDEC available for the codec, frames are decoded on that GPU. With
    ``find_rotation``, the display matrix of a container that can carry one (MP4, MOV,
    Matroska; not MPEG-TS) is read from its first frame into ``Source.rotation``.
    """
    file, size, label = _as_file(data)
    container = _open(file, label, None)
    try:
        rotation = 0
        video = main_video(container) if find_rotation else None
        if video is not None and _may_rotate(container, video):
            rotation = _rotation(container, video)
            container.close()
            if isinstance(file, io.BytesIO):
                file.seek(0)
            container = _open(file, label, None)
        source = _inspect(container, file, size, label, max_seconds, gpu)
    except BaseException:
        container.close()
        raise
    source.rotation = rotation
    return source


def main_video(container: av.container.InputContainer) -> av.VideoStream | None:
    """The input's video stream: not a cover picture (an attached picture: MP3 and M4A
    artwork, Matroska attachments), one of a codec the engine takes where there is one, and
    of these the largest picture, as the ``ffmpeg`` command line picks; the first on a tie.
    None when the input has no video but cover pictures. Nothing is decoded to choose."""
    moving = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    taken = [s for s in moving if codec_name(s) in SUPPORTED_INPUT_CODECS] or moving
    if not taken:
        return None
    return max(taken, key=_picture_size)


def _first_audio(container: av.container.InputContainer) -> av.AudioStream | None:
    """The first audio stream FFmpeg found the parameters of; None when there is none. A
    stream declared with no packets to measure (an MPEG-TS audio PID that carries nothing in
    this segment: the input's sound ended before its video, or an encoder that declares a
    track it never fills) has no channels or rate: there is no sound to keep, and an output
    stream made from it cannot be written."""
    for stream in container.streams.audio:
        ctx = stream.codec_context
        if ctx is not None and ctx.sample_rate > 0 and ctx.channels > 0:
            return stream
        log.info("audio stream %d has no parameters (no packets?): left out", stream.index)
    return None


def _picture_size(stream: av.VideoStream) -> int:
    ctx = stream.codec_context  # None for a codec FFmpeg does not know
    return (ctx.width or 0) * (ctx.height or 0) if ctx is not None else 0


def _may_rotate(container: av.container.InputContainer, video: av.VideoStream) -> bool:
    """Whether the input may carry a display matrix, in video the engine decodes (no other
    decoder runs before the input is checked)."""
    names = container.format.name.split(",")
    if "mov" not in names and "matroska" not in names:
        return False
    return codec_name(video) in SUPPORTED_INPUT_CODECS


def _rotation(container: av.container.InputContainer, video: av.VideoStream) -> int:
    """Degrees clockwise that the first frame of ``video`` turns to be shown upright (0 when
    it cannot be decoded: the decode proper reports that)."""
    try:
        with av.logging.Capture():
            for frame in container.decode(video):
                # PyAV gives the display matrix's angle counterclockwise, as FFmpeg does;
                # FFmpeg's own autorotation turns the picture by its opposite.
                return round(-frame.rotation / 90) % 4 * 90
    except (av.FFmpegError, ValueError):
        pass
    return 0


def _inspect(
    container: av.container.InputContainer,
    file: io.BytesIO | str,
    size: int | None,
    label: str,
    max_seconds: float,
    gpu: int | None,
) -> Source:
    fmt = container.format.name
    video = main_video(container)
    if video is None:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        only = ", only a cover picture" if container.streams.video else ""
        raise InputInvalid(f"{label} has no video stream{only} (streams: {kinds})")
    codec = codec_name(video)
    if codec not in SUPPORTED_INPUT_CODECS:
        raise UnsupportedCodec(
            f"input video codec {codec or 'unknown to FFmpeg'!r} is not supported; "
            f"supported: {', '.join(sorted(SUPPORTED_INPUT_CODECS))}"
        )
    if not video.codec_context.width or not video.codec_context.height:
        raise InputCorrupt(f"{label}: video stream has no picture size (truncated header?)")
    if "mpegts" in fmt and size is not None and all(size % n for n in _TS_PACKET_SIZES):
        raise InputCorrupt(
            f"{label} is truncated: {size} bytes is not a whole number of MPEG-TS packets"
        )
    duration = container.duration / av.time_base if container.duration else None
    if duration is not None and duration > max_seconds:
        raise InputTooLong(f"input lasts {duration:.1f} s; the limit is {max_seconds:g} s")
    decoder = codec
    if gpu is not None and nvdec_opens(codec):
        # Reopen with NVDEC on the worker's GPU; CPU decoding stays the fallback.
        if isinstance(file, io.BytesIO):
            file.seek(0)
        try:
            hw = _open(file, label, HWAccel("cuda", device=str(gpu), allow_software_fallback=True))
        except InputInvalid as e:
            log.warning("NVDEC open failed on GPU %s, decoding on CPU: %s", gpu, e)
        else:
            container.close()
            container = hw
            video = cast(av.VideoStream, container.streams[video.index])
            decoder = f"{codec} (nvdec:{gpu})"
    audio = _first_audio(container)
    video.codec_context.thread_type = "AUTO"
    # The measured average first; for a segment too short to measure, the rate the bitstream
    # declares (H.264/HEVC VUI timing), before FFmpeg's guess, which reads field ticks as
    # frames (60 for 30 fps H.264) and would drop every other frame of a short segment.
    rate = video.average_rate or video.codec_context.framerate or video.guessed_rate
    return Source(
        container=container,
        video=video,
        audio=audio,
        format_name=fmt,
        size=size,
        duration=duration,
        frame_rate=Fraction(rate) if rate else None,
        decoder=decoder,
    )


@dataclass(frozen=True, slots=True)
class Length:
    """How long an input is, measured from its packets rather than taken from its headers:
    the span of its video timestamps and the number of video frames."""

    duration: float
    frames: int
    #: The video's codec (FFmpeg's name).
    codec: str = ""


def measure(data: SourceInput, *, max_seconds: float = MAX_INPUT_SECONDS) -> Length:
    """Open and check an input (as :func:`open_source`) and measure it by demuxing its video
    packets (nothing is decoded). What a caller declares about a segment's length is never
    what it is priced by."""
    source = open_source(data, max_seconds=max_seconds)
    try:
        video = source.video
        first: Fraction | None = None
        end: Fraction | None = None
        frames = 0
        with av.logging.Capture():
            for packet in source.container.demux(video):
                if packet.size == 0:
                    continue  # the demuxer's flush packet
                frames += 1
                if packet.pts is None or packet.time_base is None:
                    continue
                start = packet.pts * packet.time_base
                stop = start + (packet.duration or 0) * packet.time_base
                first = start if first is None else min(first, start)
                end = stop if end is None else max(end, stop)
    except av.FFmpegError as e:
        raise InputCorrupt(f"input cannot be demuxed: {e}") from e
    finally:
        source.close()
    span = float(end - first) if first is not None and end is not None else 0.0
    if span == 0 and frames and source.frame_rate:
        span = float(frames / source.frame_rate)  # packets without timestamps
    # The video's own span: the container's duration also counts audio that runs past it.
    duration = span or source.duration or 0.0
    if duration > max_seconds:
        raise InputTooLong(f"input lasts {duration:.1f} s; the limit is {max_seconds:g} s")
    return Length(duration, frames, codec_name(source.video))
