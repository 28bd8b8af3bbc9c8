"""Pricing: Livepeer's price per pixel, the gateway's estimate, and the actual charge."""

from __future__ import annotations

import math
from collections.abc import Sequence

from farm.media.profiles import VideoProfile

__all__ = ["charge", "estimate_pixels"]

#: go-livepeer counts an unset frame rate as 60 fps when estimating.
_UNKNOWN_FPS = 60


def estimate_pixels(
    profiles: Sequence[VideoProfile],
    duration_s: float,
    margin: float,
    input_frames: int | None = None,
) -> int:
    """Encoded pixels a ladder will produce: sum of w*h*frames, plus a margin; frames are
    ceil(fps*duration), or for a profile that keeps the input's rate the input's frame count
    where it is known (60 fps where not)."""
    frames = [
        math.ceil(float(p.frame_rate) * duration_s)
        if p.frame_rate
        else input_frames
        if input_frames is not None
        else math.ceil(_UNKNOWN_FPS * duration_s)
        for p in profiles
    ]
    pixels = sum(p.width * p.height * n for p, n in zip(profiles, frames, strict=True))
    return math.ceil(pixels * (1.0 + margin))


def charge(pixels: int, price_per_unit: int, pixels_per_unit: int) -> int:
    """Credits for ``pixels`` encoded pixels at pricePerUnit/pixelsPerUnit, rounded up."""
    return -(-pixels * price_per_unit // pixels_per_unit)
