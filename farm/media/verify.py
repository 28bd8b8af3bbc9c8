"""Rendition verification: every rendition is reopened and checked before a job is done.

A gateway pays by encoded pixels and a broken rendition costs an operator its reputation,
so each rendition of each segment is checked on the worker:

- it demuxes, and its first and last GOPs decode cleanly (no errors, no corrupt frames);
- its pictures have the profile's size, and its timestamps step at the profile's frame rate;
- it lasts as long as the input, within a frame or two;
- it starts on a keyframe;
- its encoded pixel count, recomputed from the frames it holds, equals what is reported.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from farm.media.engine import Rendition, TranscodeResult

__all__ = ["Failure", "VerifyReport", "verify_rendition", "verify_result"]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a rendition was refused: a short reason code and a message."""

    rendition: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.rendition}: {self.reason}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of verifying a segment's renditions."""

    failures: tuple[Failure, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures


def _packets(r: Rendition) -> tuple[av.VideoStream, list[av.Packet[Any]]]:
    container = av.open(io.BytesIO(r.data), "r")
    stream = container.streams.video[0]
    packets = [p for p in container.demux(stream) if p.size]
    return stream, packets


def verify_rendition(
    r: Rendition, input_duration: float, tolerance_frames: float = 2.0
) -> list[Failure]:
    """Every check on one rendition; an empty list means it passed."""
    name = r.profile.name
    fail: list[Failure] = []

    def bad(reason: str, message: str) -> list[Failure]:
        fail.append(Failure(name, reason, message))
        return fail

    try:
        stream, packets = _packets(r)
    except (av.FFmpegError, IndexError) as e:
        return bad("unreadable", f"the rendition does not demux: {e}")
    if not packets:
        return bad("empty", "no video packets")
    tb = stream.time_base
    assert tb is not None
    if not packets[0].is_keyframe:
        bad("no_keyframe", "the first packet is not a keyframe")
    # Frames and pixels from what the rendition holds, not from what was reported.
    frames = len(packets)
    if (stream.codec_context.width, stream.codec_context.height) != (r.width, r.height):
        bad(
            "wrong_size",
            f"{stream.codec_context.width}x{stream.codec_context.height} "
            f"instead of {r.width}x{r.height}",
        )
    if frames * r.width * r.height != r.pixels or frames != r.frames:
        bad(
            "pixel_count",
            f"holds {frames} frames ({frames * r.width * r.height} pixels) "
            f"but reports {r.frames} ({r.pixels})",
        )
    pts = sorted(p.pts for p in packets if p.pts is not None)
    rate = r.profile.frame_rate
    frame_len = (
        (Fraction(1) / rate)
        if rate
        else ((pts[-1] - pts[0]) * tb / (len(pts) - 1) if len(pts) > 1 else Fraction(1, 30))
    )
    if rate and len(pts) > 1:
        steps = {(b - a) * tb for a, b in itertools.pairwise(pts)}
        off = [s for s in steps if abs(s - frame_len) > Fraction(1, 1000)]
        if off:
            bad(
                "frame_rate",
                f"timestamps step by {float(min(off)):.4f}-{float(max(off)):.4f} s, "
                f"not 1/{float(rate):g}",
            )
    duration = float((pts[-1] - pts[0]) * tb + frame_len)
    slack = tolerance_frames * float(frame_len)
    if abs(duration - input_duration) > slack:
        bad("duration", f"lasts {duration:.3f} s; the input lasts {input_duration:.3f} s")
    decode_failures = _decode_ends(stream, packets)
    if decode_failures:
        bad("decode", decode_failures)
    return fail


def _decode_ends(stream: av.VideoStream, packets: Sequence[av.Packet[Any]]) -> str | None:
    """Decode the first and the last GOP; a message if either does not decode cleanly."""
    keys = [i for i, p in enumerate(packets) if p.is_keyframe]
    if not keys:
        return "no keyframe anywhere"
    first_end = keys[1] if len(keys) > 1 else len(packets)
    spans = [(0, first_end)]
    if keys[-1] >= first_end:
        spans.append((keys[-1], len(packets)))
    ctx = stream.codec_context
    # Every slice is parsed and reconstructed; only deblocking, which cannot fail, is
    # skipped: a fifth less work for the same verdict.
    ctx.options = {"skip_loop_filter": "all"}
    for start, end in spans:
        expected, got = end - start, 0
        try:
            with av.logging.Capture() as logs:
                for p in packets[start:end]:
                    for frame in ctx.decode(p):
                        got += 1
                        if frame.is_corrupt:
                            return f"a corrupt frame in frames {start}-{end}"
                for _ in ctx.decode(None):
                    got += 1
        except av.FFmpegError as e:
            return f"frames {start}-{end} do not decode: {e}"
        errors = [m for level, _, m in logs if level <= av.logging.ERROR]
        if errors:
            return f"decoder errors in frames {start}-{end}: {errors[0].strip()}"
        if got != expected:
            return f"frames {start}-{end}: {got} of {expected} decoded"
        ctx.flush_buffers()
    return None


def verify_result(result: TranscodeResult, tolerance_frames: float = 2.0) -> VerifyReport:
    """Verify every rendition of a transcode against its input."""
    started = time.perf_counter()
    failures: list[Failure] = []
    for r in result.renditions:
        failures += verify_rendition(r, result.input_duration, tolerance_frames)
    return VerifyReport(tuple(failures), time.perf_counter() - started)
