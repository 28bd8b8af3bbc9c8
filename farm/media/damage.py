"""Deliberately damaged renditions, for chaos testing of verification.

A test's worker whose context holds ``attempt_damage(kind)`` (farm.context) damages its
output the way real failures do (a truncated upload, a rendition at the wrong size, a pixel
count that does not match, a stream that starts without its keyframe, a corrupt bitstream, or
a different picture altogether), so that the checks that must catch each of them can be seen
catching them, end to end. Nothing in the farm's own task path imports this module.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import Any

import av

from farm.errors import ConfigError
from farm.media.engine import EngineOptions, transcode
from farm.media.output import OutputFile
from farm.media.result import Rendition, TranscodeResult
from farm.media.synth import make_segment
from farm.media.verify import verify_result

__all__ = ["KINDS", "attempt_damage", "damage"]

#: Damage applied to a job's first attempt only (verification catches it, the retry is clean)
#: and damage applied to every attempt (only a cross-check on another orchestrator sees it).
FIRST_ATTEMPT = ("truncate", "resize", "pixels", "keyframe", "corrupt")
EVERY_ATTEMPT = ("picture",)
KINDS = FIRST_ATTEMPT + EVERY_ATTEMPT


def _truncate(r: Rendition) -> Rendition:
    cut = (len(r.data) // 2) // 188 * 188
    return dataclasses.replace(r, data=r.data[:cut])


def _remux(
    r: Rendition, video: Callable[[int, av.Packet[Any]], av.Packet[Any] | None]
) -> Rendition:
    """The rendition muxed again, each video packet (by its index) replaced by what ``video``
    gives for it, or dropped for None; audio as it was."""
    out = OutputFile(r.fmt)
    with av.open(io.BytesIO(r.data), "r") as src:
        streams = {s.index: out.container.add_stream_from_template(s) for s in src.streams}
        index = 0
        for packet in src.demux():
            if not packet.size:
                continue
            kept: av.Packet[Any] | None = packet
            if packet.stream.type == "video":
                kept, index = video(index, packet), index + 1
            if kept is not None:
                kept.stream = streams[packet.stream.index]
                out.container.mux(kept)
    return dataclasses.replace(r, data=out.finish())


def _drop_first_keyframe(r: Rendition) -> Rendition:
    return _remux(r, lambda i, p: None if i == 0 else p)


def _corrupt_bitstream(r: Rendition) -> Rendition:
    # Every other frame after the first has bytes flipped past its slice headers, as a
    # failing encoder, GPU memory or disk would leave them; the container stays intact.
    def flip(i: int, p: av.Packet[Any]) -> av.Packet[Any]:
        if i == 0 or i % 2:
            return p
        data = bytearray(bytes(p))
        for at in range(len(data) // 3, len(data), 37):
            data[at] ^= 0xA5
        out = av.Packet(bytes(data))
        out.pts, out.dts, out.time_base, out.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
        return out

    return _remux(r, flip)


def _other_picture(result: TranscodeResult, r: Rendition) -> Rendition:
    # The same size, rate and length, and a picture that has nothing to do with the input.
    src = make_segment(
        r.width,
        r.height,
        round(float(r.profile.frame_rate or 30)),
        result.input_duration,
        start=result.input_start,
        seed=99,
        noise=60,
        audio=False,
    )
    other = transcode(src, [r.profile], EngineOptions(fmt=r.fmt)).renditions[0]
    return dataclasses.replace(other, profile=r.profile)


def damage(result: TranscodeResult, kind: str) -> TranscodeResult:
    """A copy of ``result`` whose first rendition (every one, for "picture") is damaged."""
    if kind not in KINDS:
        raise ConfigError(f"unknown chaos damage {kind!r}; expected one of {', '.join(KINDS)}")
    renditions = list(result.renditions)
    first = renditions[0]
    changed: dict[str, Any]
    if kind == "truncate":
        renditions[0] = _truncate(first)
    elif kind == "resize":
        other = next(
            (x for x in renditions if (x.width, x.height) != (first.width, first.height)), None
        )
        if other is None:
            raise ConfigError("resize damage needs two renditions of different sizes")
        renditions[0] = dataclasses.replace(first, data=other.data)
    elif kind == "pixels":
        renditions[0] = dataclasses.replace(first, pixels=first.pixels + first.width * first.height)
    elif kind == "keyframe":
        renditions[0] = _drop_first_keyframe(first)
    elif kind == "corrupt":
        renditions[0] = _corrupt_bitstream(first)
    else:
        renditions = [_other_picture(result, r) for r in renditions]
    changed = {"renditions": renditions}
    return dataclasses.replace(result, **changed)


def attempt_damage(kind: str) -> Callable[[TranscodeResult, int], TranscodeResult]:
    """A worker context's ``damage`` hook: ``kind`` (one of KINDS) done to a job's first
    attempt, and to every attempt with an "always:" prefix ("always:truncate"); "picture"
    damages every attempt. The damaged result is verified again, as the engine would."""
    always, _, kind = kind.rpartition(":")
    if kind not in KINDS:
        raise ConfigError(f"unknown chaos damage {kind!r}; expected one of {', '.join(KINDS)}")

    def hook(result: TranscodeResult, attempt: int) -> TranscodeResult:
        if kind in FIRST_ATTEMPT and attempt > 1 and not always:
            return result
        damaged = damage(result, kind)
        damaged.verification = list(verify_result(damaged).failures)
        return damaged

    return hook
