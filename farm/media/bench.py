"""``farm bench``: the livepeer_bench equivalent.

Transcodes the segments of a playlist (or synthetic segments) in N concurrent sessions,
optionally paced in real time, printing livepeer_bench's CSV rows on stdout and its header
and closing tables on stderr.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from farm.errors import FarmError
from farm.media.engine import EngineOptions, transcode
from farm.media.output import EXTENSIONS
from farm.media.profiles import VideoProfile
from farm.media.result import TranscodeResult

__all__ = ["BenchConfig", "BenchRow", "BenchSummary", "run_bench"]

CSV_HEADER = "timestamp,session,segment,seg_dur,transcode_time,frames"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to run: segments as (bytes, duration), profiles, sessions, pacing."""

    segments: Sequence[tuple[bytes, float]]
    profiles: Sequence[VideoProfile]
    concurrent_sessions: int = 1
    session_delay_s: float = 0.3
    repeat: int = 1
    live: bool = False
    gpus: Sequence[int] = ()
    out_prefix: Path | None = None
    options: EngineOptions = dataclasses.field(default_factory=EngineOptions)
    source_label: str = "synthetic"


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One transcoded segment."""

    timestamp: datetime
    session: int
    segment: int
    seg_dur: float
    transcode_time: float
    frames: int
    error: str | None = None

    def csv(self) -> str:
        ts = self.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-2]
        return (
            f"{ts},{self.session},{self.segment},{self.seg_dur:.4g},"
            f"{self.transcode_time:.4g},{self.frames}"
        )


@dataclass(frozen=True, slots=True)
class BenchSummary:
    """The closing table of one repeat."""

    sessions: int
    total: int
    realtime: int
    failed: int
    source_duration: float
    transcode_duration: float
    wall: float = 0.0

    @property
    def realtime_segment_ratio(self) -> float:
        return self.realtime / self.total if self.total else 0.0

    @property
    def realtime_duration_ratio(self) -> float:
        """Transcode time over source duration; below 1 is faster than real time."""
        return self.transcode_duration / self.source_duration if self.source_duration else 0.0

    def table(self) -> str:
        rows = [
            ("Concurrent Sessions", str(self.sessions)),
            ("Total Segs Transcoded", str(self.total)),
            ("Real-Time Segs Transcoded", str(self.realtime)),
            ("* Real-Time Segs Ratio *", f"{self.realtime_segment_ratio:.4g}"),
            ("Total Source Duration", f"{self.source_duration:.4g}s"),
            ("Total Transcoding Duration", f"{self.transcode_duration:.4g}s"),
            ("* Real-Time Duration Ratio *", f"{self.realtime_duration_ratio:.4g}"),
            ("Wall Time", f"{self.wall:.4g}s"),
            ("Segments per Second", f"{self.total / self.wall:.4g}" if self.wall else "0"),
        ]
        if self.failed:
            rows.insert(2, ("Failed Segs", str(self.failed)))
        return _table(rows)


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    value_width = max(len(v) for _, v in rows)
    line = f"+{'-' * (width + 2)}+{'-' * (value_width + 2)}+"
    body = [f"| {k:<{width}} | {v:>{value_width}} |" for k, v in rows]
    return "\n".join([line, *body, line])


def header_table(cfg: BenchConfig) -> str:
    rows = [
        ("Source File", cfg.source_label),
        ("Transcoding Options", ",".join(p.name for p in cfg.profiles)),
        ("Concurrent Sessions", str(cfg.concurrent_sessions)),
        ("Live Mode", str(cfg.live).lower()),
        ("Engine Threads", "parallel renditions" if cfg.options.parallel else "serial"),
    ]
    if cfg.gpus:
        rows.append(("Nvidia GPU IDs", ",".join(map(str, cfg.gpus))))
    if cfg.repeat > 1:
        rows.append(("Repeat Times", str(cfg.repeat)))
    return _table(rows)


def run_bench(
    cfg: BenchConfig, out: TextIO, err: TextIO, on_row: Callable[[BenchRow], None] | None = None
) -> list[BenchSummary]:
    """Run the benchmark, writing CSV rows to ``out`` and tables to ``err``."""
    print(header_table(cfg), file=err, flush=True)
    summaries = []
    for _ in range(cfg.repeat):
        print(CSV_HEADER, file=out, flush=True)
        rows: list[BenchRow] = []
        lock = threading.Lock()
        started = time.perf_counter()

        def session(k: int, rows: list[BenchRow], lock: threading.Lock) -> None:
            opts = cfg.options
            if cfg.gpus:
                opts = dataclasses.replace(opts, gpu=cfg.gpus[k % len(cfg.gpus)])
            for i, (data, duration) in enumerate(cfg.segments):
                t0 = time.perf_counter()
                try:
                    result = transcode(data, cfg.profiles, opts)
                except FarmError as e:
                    row = BenchRow(
                        datetime.now(), k, i, duration, time.perf_counter() - t0, 0, error=str(e)
                    )
                else:
                    elapsed = time.perf_counter() - t0
                    row = BenchRow(
                        datetime.now(), k, i, duration, elapsed, result.renditions[0].frames
                    )
                    if cfg.out_prefix is not None:
                        _write(cfg.out_prefix, k, i, result)
                with lock:
                    rows.append(row)
                    print(row.csv(), file=out, flush=True)
                    if row.error:
                        print(f"session {k} segment {i} failed: {row.error}", file=err)
                if on_row:
                    on_row(row)
                if cfg.live:
                    # Real-time pacing: the next segment arrives one duration after this one.
                    time.sleep(max(0.0, duration - (time.perf_counter() - t0)))

        threads = []
        for k in range(cfg.concurrent_sessions):
            t = threading.Thread(target=session, args=(k, rows, lock), name=f"bench-session-{k}")
            t.start()
            threads.append(t)
            if k + 1 < cfg.concurrent_sessions:
                time.sleep(cfg.session_delay_s)
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        ok = [r for r in rows if r.error is None]
        summary = BenchSummary(
            sessions=cfg.concurrent_sessions,
            total=len(ok),
            realtime=sum(1 for r in ok if r.transcode_time <= r.seg_dur),
            failed=len(rows) - len(ok),
            source_duration=sum(r.seg_dur for r in ok),
            # As livepeer_bench: the sum of per-segment transcode times, not wall time.
            transcode_duration=sum(r.transcode_time for r in ok),
            wall=wall,
        )
        print(summary.table(), file=err, flush=True)
        summaries.append(summary)
    return summaries


def _write(prefix: Path, session: int, segment: int, result: TranscodeResult) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for r in result.renditions:
        name = f"{prefix.name}{session}_{r.profile.name}_{segment}.{EXTENSIONS[r.fmt]}"
        (prefix.parent / name).write_bytes(r.data)
