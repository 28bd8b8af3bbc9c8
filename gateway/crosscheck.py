"""Sampled cross-checks: some segments are also transcoded elsewhere and compared.

A fraction of segments (go-livepeer's ``verificationFreq``) goes to up to two more
orchestrators. Their renditions are compared with the first one's: size, frame count,
duration, and the picture itself (PSNR of the luma on sampled frames). An orchestrator that
disagrees with the majority is suspended and the disagreement is logged on the session; if
it was the one that served the segment, the majority's renditions are returned instead.
Each extra transcode is one try of the gateway's retry loop (gateway.attempts), so one that
fails is judged, and suspended, as on the segment's own path.
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np

from farm.client import RenditionRef
from gateway import metrics
from gateway.attempts import Work, attempt
from gateway.dispatch import Dispatcher, Segment, SegmentOutcome
from gateway.errors import NoOrchestrators, TranscodeFailed
from gateway.pool import Pool, PoolEntry
from gateway.pricing import attempt_price
from gateway.sessions import SessionLog

__all__ = ["CrossChecker", "compare_renditions"]

log = logging.getLogger(__name__)
_SAMPLES = 3


def _luma(data: bytes, picks: Sequence[int]) -> list[np.ndarray[Any, Any]]:
    wanted = set(picks)
    out = []
    with av.open(io.BytesIO(data), "r") as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in wanted:
                out.append(frame.to_ndarray(format="gray").astype(np.float64))
    return out


def psnr(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def compare_renditions(
    a: Sequence[tuple[RenditionRef, bytes]],
    b: Sequence[tuple[RenditionRef, bytes]],
    min_psnr: float,
) -> str | None:
    """None when two orchestrators' renditions agree; else why they do not."""
    theirs = {ref.name: (ref, data) for ref, data in b}
    for ref, data in a:
        if ref.name not in theirs:
            return f"{ref.name}: missing"
        other, other_data = theirs[ref.name]
        if (ref.width, ref.height) != (other.width, other.height):
            return f"{ref.name}: size {ref.width}x{ref.height} vs {other.width}x{other.height}"
        if ref.frames != other.frames:
            return f"{ref.name}: {ref.frames} vs {other.frames} frames"
        if abs(ref.duration - other.duration) > ref.duration / max(ref.frames, 1) + 1e-6:
            return f"{ref.name}: duration {ref.duration:.3f} vs {other.duration:.3f} s"
        picks = sorted({0, ref.frames // 2, max(0, ref.frames - 1)})[:_SAMPLES]
        try:
            ours, others = _luma(data, picks), _luma(other_data, picks)
        except av.FFmpegError as e:
            return f"{ref.name}: does not decode: {e}"
        for i, (x, y) in enumerate(zip(ours, others, strict=False)):
            if x.shape != y.shape:
                return f"{ref.name}: frame {picks[i]} sizes differ"
            value = psnr(x, y)
            if value < min_psnr:
                return f"{ref.name}: frame {picks[i]} PSNR {value:.1f} dB < {min_psnr:g} dB"
    return None


class CrossChecker:
    """Decides which segments to cross-check and acts on what the comparison finds."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        pool: Pool,
        sessions: SessionLog,
        freq: float,
        min_psnr: float,
        seed: int | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.pool = pool
        self.sessions = sessions
        self.freq = freq
        self.min_psnr = min_psnr
        self._random = random.Random(seed)
        self._threads = ThreadPoolExecutor(4, "gateway-crosscheck")

    def check(self, segment: Segment, primary: SegmentOutcome) -> SegmentOutcome:
        """The outcome to return for a segment (the primary's unless the majority differs)."""
        if self.freq <= 0 or self._random.random() >= self.freq:
            return primary
        others = [
            o for o in self.pool.candidates(exclude={primary.orchestrator}) if segment.takes(o)
        ][:2]
        if not others:
            return primary
        timeout = self.dispatcher.attempt_timeout(segment.duration_s, segment.timeout_multiplier)

        def run(other: PoolEntry) -> SegmentOutcome | None:
            deadline = time.monotonic() + timeout
            # The retry loop with this one orchestrator and one try: a failure is judged and
            # suspends as on the segment's own path; the verdict is logged by _judge.
            work = Work(
                run=lambda o, _: self.dispatcher.try_on(
                    o, segment, deadline, 0, keep_session=False
                ),
                refused=TranscodeFailed,
                label=f"cross-check of segment {segment.session_id}/{segment.seq}",
                duration_s=segment.duration_s,
                tier=lambda o: 0 if o.name == other.name else None,
            )
            try:
                return attempt(self.pool, None, work, max_tries=1, deadline=deadline).value
            except (TranscodeFailed, NoOrchestrators) as e:
                log.info("cross-check on %s failed: %s", other.name, e)
                return None

        outcomes = [primary] + [o for o in self._threads.map(run, others) if o is not None]
        return self._judge(segment.session_id, segment.seq, outcomes)

    def _judge(self, session_id: str, seq: int, outcomes: list[SegmentOutcome]) -> SegmentOutcome:
        n = len(outcomes)
        if n < 2:
            return outcomes[0]
        agree = [
            [
                i == j
                or compare_renditions(outcomes[i].renditions, outcomes[j].renditions, self.min_psnr)
                is None
                for j in range(n)
            ]
            for i in range(n)
        ]
        votes = [sum(row) for row in agree]
        majority = max(votes)
        winners = [i for i in range(n) if votes[i] == majority]
        for i, o in enumerate(outcomes):
            orch = self.pool.by_name(o.orchestrator)
            price = attempt_price(orch)
            if votes[i] < majority and majority * 2 > n:
                reason = (
                    compare_renditions(outcomes[winners[0]].renditions, o.renditions, self.min_psnr)
                    or "disagrees with the majority"
                )
                self.sessions.attempt(
                    session_id,
                    seq,
                    0,
                    o.orchestrator,
                    0.0,
                    "disagreed",
                    price=price,
                    pixels=o.pixels,
                    error_code="verification",
                    error=reason,
                )
                metrics.verification_disagreement(o.orchestrator)
                if orch is not None:
                    self.pool.suspend(orch, f"cross-check: {reason}")
            elif i > 0:
                self.sessions.attempt(
                    session_id,
                    seq,
                    0,
                    o.orchestrator,
                    0.0,
                    "verified",
                    price=price,
                    pixels=o.pixels,
                )
        if majority * 2 <= n and n > 1 and votes[0] < n:
            log.warning("segment %s/%s: orchestrators disagree with no majority", session_id, seq)
        return outcomes[0] if votes[0] == majority or majority * 2 <= n else outcomes[winners[0]]

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
