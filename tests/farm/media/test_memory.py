"""farm.media.memory: a worker's next segment reuses the memory its last one freed.

Each case runs in a process of its own: glibc's allocator settings are process-wide and
cannot be undone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SEGMENTS = """
import json, resource, sys
from pathlib import Path
from farm.media.engine import EngineOptions, transcode
from farm.media.memory import keep_freed_memory
from farm.media.profiles import VideoProfile
from farm.media.synth import make_segment

kept = keep_freed_memory() if sys.argv[1] == "keep" else None
src = Path(sys.argv[2])
src.write_bytes(make_segment(1280, 720, 30, 1.0, bitrate=2_000_000, gop_seconds=1.0))
ladder = [
    VideoProfile("480p", 854, 480, 1_000_000, fps=30, gop="1"),
    VideoProfile("240p", 426, 240, 300_000, fps=30, gop="1"),
]
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    result = transcode(src, ladder, EngineOptions(fmt="mpegts", preset="veryfast"))
    assert [r.profile.name for r in result.renditions] == ["480p", "240p"]
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _segments(mode: str, tmp_path: Path, **env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _SEGMENTS, mode, str(tmp_path / f"{mode}.ts")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_later_segments_reuse_memory_instead_of_faulting_it_in_again(tmp_path: Path) -> None:
    kept = _segments("keep", tmp_path)
    fresh = _segments("fresh", tmp_path)
    assert kept["kept"] is True
    kept_faults, fresh_faults = kept["faults"], fresh["faults"]
    assert isinstance(kept_faults, list) and isinstance(fresh_faults, list)
    # The first segments fault their memory in either way, while the heap grows to what a
    # segment needs; after that, glibc's defaults map and zero the encoders' buffers anew for
    # every segment (about 10,000 pages here), and the kept heap does not (a few hundred).
    assert sum(kept_faults[-2:]) * 3 < sum(fresh_faults[-2:]), (kept_faults, fresh_faults)


def test_an_operators_own_allocator_settings_are_left_alone(tmp_path: Path) -> None:
    out = _segments("keep", tmp_path, MALLOC_ARENA_MAX="4")
    assert out["kept"] is False
