"""Queue names: each states what a job needs.

``transcode.gpu.<codec>`` (NVENC), ``transcode.cpu.<codec>`` (software encoders),
``ai.<pipeline>`` and ``chain`` (beat tasks, one consumer).
"""

from __future__ import annotations

from farm.errors import ProfileInvalid

__all__ = [
    "CHAIN_QUEUE",
    "CODECS",
    "CONTROL_QUEUE",
    "ai_queue",
    "ai_worker_queue",
    "codec_of",
    "transcode_queue",
]

CHAIN_QUEUE = "chain"
#: Housekeeping (the reconciler); consumed by every worker.
CONTROL_QUEUE = "farm.control"
#: Livepeer encoder family -> queue codec name.
CODECS = {"H.264": "h264", "HEVC": "hevc", "AV1": "av1", "VP9": "vp9"}


def codec_of(encoder: str) -> str:
    try:
        return CODECS[encoder]
    except KeyError:
        raise ProfileInvalid(f"no queue for encoder {encoder!r}") from None


def transcode_queue(codec: str, gpu: bool) -> str:
    return f"transcode.{'gpu' if gpu else 'cpu'}.{codec}"


def ai_queue(pipeline: str) -> str:
    return f"ai.{pipeline}"


def ai_worker_queue(pipeline: str, worker: str) -> str:
    """One AI worker's own queue for a pipeline: the router sends a job to a chosen worker."""
    return f"ai.{pipeline}@{worker}"
