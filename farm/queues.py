"""Queue names: each states what a job needs.

``transcode.gpu.<codec>`` (NVENC), ``transcode.cpu.<codec>`` (software encoders),
``ai.<pipeline>`` and ``chain`` (beat tasks, one consumer). A worker's own queues carry its
name: ``transcode@<worker>`` (the next segments of the streams whose encoders it keeps) and
``ai.<pipeline>@<worker>``.
"""

from __future__ import annotations

from farm.errors import ProfileInvalid

__all__ = [
    "CHAIN_QUEUE",
    "CODECS",
    "CONTROL_QUEUE",
    "GOLIVEPEER_CODECS",
    "STREAM_QUEUE_PREFIX",
    "ai_queue",
    "ai_worker_queue",
    "codec_of",
    "golivepeer_queue_error",
    "stream_queue",
    "stream_queue_owner",
    "transcode_queue",
]

CHAIN_QUEUE = "chain"
#: Housekeeping (the reconciler); consumed by every worker.
CONTROL_QUEUE = "farm.control"
#: Livepeer encoder family -> queue codec name.
CODECS = {"H.264": "h264", "HEVC": "hevc", "AV1": "av1", "VP9": "vp9"}
#: The queue codecs go-livepeer transcoders can encode: their protocol's VideoProfile.encoder
#: has H264 0, H265 1, VP8 2 and VP9 3, and nothing else (no AV1); the farm has no VP8.
GOLIVEPEER_CODECS = ("h264", "hevc", "vp9")


def codec_of(encoder: str) -> str:
    try:
        return CODECS[encoder]
    except KeyError:
        raise ProfileInvalid(f"no queue for encoder {encoder!r}") from None


def transcode_queue(codec: str, gpu: bool) -> str:
    return f"transcode.{'gpu' if gpu else 'cpu'}.{codec}"


#: The prefix of every worker's own transcode queue (stream_queue).
STREAM_QUEUE_PREFIX = "transcode@"


def stream_queue(worker: str) -> str:
    """One transcode worker's own queue: a stream's next segment goes there, to the worker
    that keeps the stream's encoders (farm.router.route_stream)."""
    return f"{STREAM_QUEUE_PREFIX}{worker}"


def stream_queue_owner(queue: str) -> str | None:
    """The worker whose own queue ``queue`` is; None for a queue of no one worker."""
    return queue[len(STREAM_QUEUE_PREFIX) :] if queue.startswith(STREAM_QUEUE_PREFIX) else None


def golivepeer_queue_error(queue: str) -> str | None:
    """Why the go-livepeer bridge must not consume ``queue``; None when it may (a transcode
    queue of a codec go-livepeer transcoders have)."""
    kind, _, rest = queue.partition(".")
    device, _, codec = rest.partition(".")
    if kind != "transcode" or device not in ("cpu", "gpu") or not codec:
        return f"{queue!r} is not a transcode queue (transcode.cpu.CODEC or transcode.gpu.CODEC)"
    if codec not in GOLIVEPEER_CODECS:
        return (
            f"{queue!r}: go-livepeer transcoders cannot encode {codec} "
            f"(their protocol has {', '.join(GOLIVEPEER_CODECS)})"
        )
    return None


def ai_queue(pipeline: str) -> str:
    return f"ai.{pipeline}"


def ai_worker_queue(pipeline: str, worker: str) -> str:
    """One AI worker's own queue for a pipeline: the router sends a job to a chosen worker."""
    return f"ai.{pipeline}@{worker}"
