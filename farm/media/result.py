"""What a transcode produces: its renditions, what it measured, and what verification found.

The engine (farm.media.engine) makes these and verification (farm.media.verify) checks them;
both import them from here, so neither imports the other's module for its types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from farm.media.output import MIME_TYPES
from farm.media.profiles import VideoProfile

__all__ = ["Failure", "Rendition", "TranscodeResult"]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a rendition was refused: a short reason code and a message."""

    rendition: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.rendition}: {self.reason}: {self.message}"


@dataclass(slots=True)
class Rendition:
    """One encoded rendition of a segment."""

    profile: VideoProfile
    data: bytes
    fmt: str
    encoder: str
    width: int
    height: int
    frames: int
    #: Encoded pixels: frames x width x height, what an orchestrator charges.
    pixels: int
    #: First and last-plus-one presentation time of the video, in seconds.
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.fmt]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.profile.name,
            "format": self.fmt,
            "encoder": self.encoder,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "pixels": self.pixels,
            "bytes": len(self.data),
            "start": round(self.start, 6),
            "duration": round(self.duration, 6),
        }


@dataclass(slots=True)
class TranscodeResult:
    """Everything a segment's transcode produced and measured."""

    renditions: list[Rendition]
    decoder: str
    decoded_frames: int
    decoded_pixels: int
    input_start: float
    input_duration: float
    timings: dict[str, float] = field(default_factory=dict)
    #: With EngineOptions.verify: what each rendition's checks found (empty when all passed).
    verification: list[Failure] | None = None
    #: With EngineOptions.session: how many renditions encoded with their stream's kept
    #: encoder (``reused``), opened one to keep (``opened``), or one for this segment alone
    #: (``fresh``: their encoder cannot keep state, farm.media.encoders).
    encoders: dict[str, int] | None = None
    #: The decoder and encoders this transcode used, closed but not yet freed. Freeing them
    #: (codec contexts, the encoders' threads) takes about a millisecond that a worker can
    #: spend after it has answered rather than before: it drops this with the result.
    spent: list[object] = field(default_factory=list, repr=False, compare=False)

    @property
    def encoded_pixels(self) -> int:
        return sum(r.pixels for r in self.renditions)
