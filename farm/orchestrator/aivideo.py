"""image-to-video's answer: the runner's frames assembled into one H.264 MP4.

ai-runner answers image-to-video with the generated frames as separate pictures
(``VideoResponse{frames: [[Media]]}``); go-livepeer's orchestrator encodes each batch into an
MP4 and answers it as an ``ImageResponse`` whose ``url`` is the video. Here PyAV does the
encoding: libx264, yuv420p (what players take), ``fps`` frames a second, a keyframe first.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import av.error

from farm.errors import AIRequestInvalid, RunnerFailed

__all__ = ["DEFAULT_FPS", "frames_to_mp4"]

#: ai-runner's default frame rate for image-to-video.
DEFAULT_FPS = 6


def _picture(data: bytes, index: int) -> av.VideoFrame:
    try:
        with av.open(io.BytesIO(data), "r") as container:
            for frame in container.decode(video=0):
                return frame.reformat(format="rgb24")
    except (av.error.FFmpegError, IndexError) as e:
        raise RunnerFailed(f"frame {index} of the runner's video is not a picture: {e}") from e
    raise RunnerFailed(f"frame {index} of the runner's video holds no picture")


def frames_to_mp4(pictures: Sequence[bytes], fps: int = DEFAULT_FPS) -> bytes:
    """An H.264 MP4 of ``pictures`` (image files, in order) at ``fps`` frames a second.

    Every frame takes the size of the first, rounded down to even sides (4:2:0 needs them).
    RunnerFailed when there is no frame or one is not a picture."""
    if not pictures:
        raise RunnerFailed("the runner answered image-to-video without frames")
    if fps < 1 or fps > 240:
        raise AIRequestInvalid(f"fps must be between 1 and 240, not {fps}")
    first = _picture(pictures[0], 0)
    width, height = max(2, first.width & ~1), max(2, first.height & ~1)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": "20"}
        for i, data in enumerate(pictures):
            picture = first if i == 0 else _picture(data, i)
            frame = picture.reformat(width=width, height=height, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()
