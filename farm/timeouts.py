"""How long one segment's transcode may take: go-livepeer's rule, written once.

go-livepeer gives a segment max(8 s, 4 x its duration) to transcode (8 s is its
``common.HTTPTimeout``), stretched by a stream's ``timeoutMultiplier``. The farm's task time
limits, the gateway's per-attempt budget and the push to a go-livepeer transcoder all use
:func:`segment_timeout`.
"""

from __future__ import annotations

__all__ = ["DURATION_FACTOR", "MIN_TIMEOUT_S", "segment_timeout"]

#: go-livepeer's floor for a segment's transcode timeout (common.HTTPTimeout).
MIN_TIMEOUT_S = 8.0
#: Seconds of timeout per second of media above the floor.
DURATION_FACTOR = 4.0


def segment_timeout(
    duration_s: float | None, multiplier: float = 1.0, floor_s: float = MIN_TIMEOUT_S
) -> float:
    """go-livepeer's timeout for a segment lasting ``duration_s`` (None: not known, the
    floor): max(floor, 4 x duration), times ``multiplier`` when that is over 1 (a
    multiplier never shortens it)."""
    return max(floor_s, DURATION_FACTOR * (duration_s or 0.0)) * max(1.0, multiplier)
