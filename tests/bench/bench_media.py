"""make bench-media: the engine against the ffmpeg command line on the same ladder.

A 2-second 1080p30 H.264 segment with AAC audio goes to 720p 3 Mbps / 480p 1.6 Mbps /
360p 0.8 Mbps (libx264 veryfast, 2 s GOP, audio copied, bicubic scaling on both sides),
as one ffmpeg process and as one engine call, alternating, median of N runs each.

The closing table puts three side by side, each with its ratio to the ffmpeg command line, in
wall time and in CPU time (every thread; ffmpeg's as its child process): the engine alone,
the engine verifying every rendition (farm.media.verify, as workers run it), and ffmpeg
(which verifies nothing). The last line is the ratio engine/ffmpeg. The load average is
printed with them: on a shared machine, compare ratios from quiet runs.

The engine runs as a media worker runs it, with glibc keeping freed memory for the next
segment (farm.media.memory); ``--fresh-memory`` leaves glibc at its defaults instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from farm.media.engine import EngineOptions, transcode
from farm.media.memory import keep_freed_memory
from farm.media.profiles import VideoProfile
from farm.media.synth import make_segment

LADDER = [
    VideoProfile("720p", 1280, 720, 3_000_000, fps=30, gop="2"),
    VideoProfile("480p", 854, 480, 1_600_000, fps=30, gop="2"),
    VideoProfile("360p", 640, 360, 800_000, fps=30, gop="2"),
]


def ffmpeg_command(src: Path, out: Path) -> list[str]:
    n = len(LADDER)
    split = f"[0:v]split={n}" + "".join(f"[v{i}]" for i in range(n))
    scales = [f"[v{i}]scale={p.width}:{p.height}:flags=bicubic[o{i}]" for i, p in enumerate(LADDER)]
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(src),
        "-filter_complex",
        ";".join([split, *scales]),
    ]
    for i, p in enumerate(LADDER):
        cmd += [
            "-map",
            f"[o{i}]",
            "-map",
            "0:a",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            str(p.bitrate),
            "-r",
            str(p.fps),
            "-g",
            str(2 * p.fps),
            "-c:a",
            "copy",
            "-f",
            "mpegts",
            str(out / f"{p.name}.ts"),
        ]
    return cmd


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds of this process, every thread included (or of its ended children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--serial", action="store_true", help="encode renditions one by one")
    parser.add_argument(
        "--gpu", type=int, default=None, help="decode (input and verification) with NVDEC here"
    )
    parser.add_argument(
        "--fresh-memory",
        action="store_true",
        help="leave glibc's allocator at its defaults (farm.media.memory), as workers do not",
    )
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    if not args.fresh_memory:
        keep_freed_memory()  # as every media worker does before its pool starts
    segment = make_segment(1920, 1080, 30, 2.0, bitrate=6_500_000, gop_seconds=2.0)
    opts = EngineOptions(fmt="mpegts", preset="veryfast", parallel=not args.serial, gpu=args.gpu)
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        src = Path(tmp) / "in.ts"
        src.write_bytes(segment)
        cmd = ffmpeg_command(src, Path(tmp))
        transcode(src, LADDER, opts)  # warm up both
        subprocess.run(cmd, check=True)
        engine_s, ffmpeg_s, verified_s, verify_s, after_s = [], [], [], [], []
        engine_cpu, verified_cpu, ffmpeg_cpu = [], [], []
        checked = dataclasses.replace(opts, verify=True)
        checked_after = dataclasses.replace(checked, verify_following=False)
        for run in range(args.runs):
            t, c = time.perf_counter(), _cpu()
            result = transcode(src, LADDER, opts)
            engine_s.append(time.perf_counter() - t)
            engine_cpu.append(_cpu() - c)
            t, c = time.perf_counter(), _cpu()
            with_checks = transcode(src, LADDER, checked)
            verified_s.append(time.perf_counter() - t)
            verified_cpu.append(_cpu() - c)
            verify_s.append(with_checks.timings["verify"])
            assert with_checks.verification == [], with_checks.verification
            t = time.perf_counter()
            assert transcode(src, LADDER, checked_after).verification == []
            after_s.append(time.perf_counter() - t)
            t, c = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True)
            ffmpeg_s.append(time.perf_counter() - t)
            ffmpeg_cpu.append(_cpu(resource.RUSAGE_CHILDREN) - c)
            print(
                f"run {run + 1}: engine {engine_s[-1]:.3f} s, "
                f"engine + verification {verified_s[-1]:.3f} s, ffmpeg {ffmpeg_s[-1]:.3f} s",
                flush=True,
            )
        sizes = ", ".join(f"{r.profile.name} {len(r.data) / 1e3:.0f} kB" for r in result.renditions)
        ff_sizes = ", ".join(
            f"{p.name} {(Path(tmp) / f'{p.name}.ts').stat().st_size / 1e3:.0f} kB" for p in LADDER
        )
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; input 1080p30 2.0 s, {len(segment) / 1e6:.2f} MB")
    print(f"engine outputs: {sizes}")
    print(f"ffmpeg outputs: {ff_sizes}")
    e, f = statistics.median(engine_s), statistics.median(ffmpeg_s)
    v, a = statistics.median(verified_s), statistics.median(after_s)
    print(
        f"verification (every rendition reopened, first and last GOP decoded, all checks), "
        f"following each rendition while it is written: median "
        f"{statistics.median(verify_s) * 1000:.0f} ms of work on the busiest verifier thread, "
        f"+{(v - e) * 1000:.0f} ms ({(v - e) / e * 100:+.1f} % of the transcode time); "
        f"after each rendition is finished instead: {a:.3f} s, +{(a - e) * 1000:.0f} ms "
        f"({(a - e) / e * 100:+.1f} %)"
    )
    ec, vc = statistics.median(engine_cpu), statistics.median(verified_cpu)
    print(
        f"CPU time: transcode {ec:.3f} s, with verification {vc:.3f} s, "
        f"+{(vc - ec) * 1000:.0f} ms ({(vc - ec) / ec * 100:+.1f} %)"
    )
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end "
        f"({os.cpu_count()} cores); {args.runs} runs each"
    )
    rows = [
        ("engine alone", engine_s, engine_cpu),
        ("engine + verification", verified_s, verified_cpu),
        ("ffmpeg CLI (no verification)", ffmpeg_s, ffmpeg_cpu),
    ]
    fc = statistics.median(ffmpeg_cpu)
    print(f"{'':30s} {'median':>9s} {'min':>9s} {'vs ffmpeg':>10s} {'CPU':>9s} {'vs ffmpeg':>10s}")
    for label, times, cpus in rows:
        m, mc = statistics.median(times), statistics.median(cpus)
        print(f"{label:30s} {m:8.3f}s {min(times):8.3f}s {m / f:9.3f}x {mc:8.3f}s {mc / fc:9.3f}x")
    print(f"ratio engine+verification/ffmpeg: {v / f:.3f}")
    print(f"ratio engine/ffmpeg: {e / f:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
