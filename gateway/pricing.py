"""Pricing: Livepeer's price per pixel, the gateway's estimate, and the actual charge."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

from farm.media.profiles import VideoProfile

if TYPE_CHECKING:
    from gateway.pool import PoolEntry

__all__ = ["Price", "attempt_price", "charge", "estimate_pixels", "highest_price"]

#: (pricePerUnit, pixelsPerUnit): Livepeer's price, credits per unit of pixels (or units).
Price = tuple[int, int]

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


def attempt_price(o: PoolEntry | None, fixed: Price | None = None) -> Price:
    """The one price an attempt is charged (to an API key) and logged at: the price fixed for
    the whole request where there is one (an AI request's, from the gateway's price table),
    else the orchestrator's configured pricePerUnit/pixelsPerUnit (a network orchestrator's
    own quote is paid in tickets, never charged); free for one no longer in the pool."""
    if fixed is not None:
        return fixed
    if o is None:
        return (0, 1)
    return o.config.price_per_unit, o.config.pixels_per_unit


def highest_price(orchestrators: Sequence[PoolEntry]) -> Price:
    """The highest :func:`attempt_price` among ``orchestrators`` (what a reservation for work
    that may run on any of them must cover)."""
    return max((attempt_price(o) for o in orchestrators), key=lambda p: Fraction(*p))
