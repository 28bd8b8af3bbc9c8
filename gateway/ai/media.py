"""Measuring uploads with PyAV: an image's width and height, an audio file's duration.

AI jobs are priced from their input (pixels of the image, seconds of the audio), so the
gateway opens every uploaded file before it prices the job; a file PyAV cannot read is the
caller's error (400), found before any credit is held or any orchestrator is asked.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice

import av

from gateway.errors import BadRequest

__all__ = ["MediaInfo", "audio_seconds", "image_size"]


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What was measured of a request's upload (nothing for text-only pipelines)."""

    width: int = 0
    height: int = 0
    seconds: float = 0.0


#: Demuxers of still (or animated) image files; other containers hold video.
_IMAGE_FORMATS = ("image2", "gif", "apng")


def image_size(data: bytes, field: str = "image") -> MediaInfo:
    """The width and height of an image (PNG, JPEG, WebP, ... anything FFmpeg decodes).

    A video is refused: a file in a video container passes only when it holds one picture
    and no sound (a still image in an ISO-BMFF container, such as AVIF)."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.video:
                raise BadRequest(f"{field}: not an image (no picture in the file)")
            fmt = container.format.name
            if not (fmt.endswith("_pipe") or fmt in _IMAGE_FORMATS) and (
                container.streams.audio or len(list(islice(container.decode(video=0), 2))) > 1
            ):
                raise BadRequest(f"{field}: a video ({fmt}), not an image")
            ctx = container.streams.video[0].codec_context
            width, height = ctx.width, ctx.height
            if not width or not height:
                frame = next(container.decode(video=0))
                width, height = frame.width, frame.height
    except (av.FFmpegError, StopIteration, ValueError) as e:
        raise BadRequest(f"{field}: not a decodable image: {e}") from e
    if width <= 0 or height <= 0:
        raise BadRequest(f"{field}: the image has no size")
    return MediaInfo(width=width, height=height)


def audio_seconds(data: bytes, field: str = "audio") -> MediaInfo:
    """The duration of an audio file, measured from its packets, else by decoding it; never
    taken from its header, which whoever made the file wrote (an MP3 whose Info header
    counts 10 frames still plays, and is transcribed, for as long as its packets last)."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise BadRequest(f"{field}: not an audio file (no audio stream)")
            seconds = _packet_span(container, container.streams.audio[0])
        if seconds is None:
            with av.open(io.BytesIO(data), "r") as container:
                stream = container.streams.audio[0]
                samples = sum(int(frame.samples) for frame in container.decode(stream))
                seconds = samples / (stream.sample_rate or 1)
    except (av.FFmpegError, ValueError) as e:
        raise BadRequest(f"{field}: not a decodable audio file: {e}") from e
    if seconds <= 0:
        raise BadRequest(f"{field}: the audio has no duration")
    return MediaInfo(seconds=seconds)


def _packet_span(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """Seconds from the first packet's start to the last one's end; None when a packet has
    no timing (then only decoding can tell)."""
    first: Fraction | None = None
    end: Fraction | None = None
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's flush packet
        if packet.pts is None or not packet.duration or packet.time_base is None:
            return None
        start = packet.pts * packet.time_base
        stop = start + packet.duration * packet.time_base
        first = start if first is None else min(first, start)
        end = stop if end is None else max(end, stop)
    return None if first is None or end is None else float(end - first)
