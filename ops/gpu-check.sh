#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU: NVML's view, every NVENC/NVDEC codec opened for
# real, a transcode through the GPU path, and the media benchmark (engine vs ffmpeg) with the
# engine decoding on the GPU where NVDEC exists. Data-centre GPUs (H100, H200) have NVDEC but
# no NVENC: the engine must say so and encode on the CPU.
#
#   ops/gpu-check.sh            # from the repository root; installs into .venv if needed
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e . || exit 1
fi
export SVT_LOG=1

echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,driver_version,memory.total,encoder.stats.sessionCount \
  --format=csv 2>&1 || echo "nvidia-smi not available"

echo "== farm gpus (NVML and codecs opened for real)"
.venv/bin/farm gpus --json

echo "== NVDEC decode and the engine's choice of encoder on GPU 0"
$PY - <<'PY'
import json, time
from farm.media.engine import EngineOptions, transcode
from farm.media.profiles import parse_profiles
from farm.media.codecs import choose_encoder
from farm.media.synth import make_segment

seg = make_segment(1920, 1080, 30, 2.0, bitrate=6_500_000)
choice = choose_encoder("H.264", prefer_gpu=True)
print("H.264 encoder chosen:", choice)
for gpu in (None, 0):
    t = time.perf_counter()
    r = transcode(seg, parse_profiles("P720p30fps16x9,P360p30fps16x9"), EngineOptions(gpu=gpu))
    print(json.dumps({"gpu": gpu, "decoder": r.decoder, "seconds": round(time.perf_counter() - t, 3),
                      "renditions": [x.summary() for x in r.renditions]}))
PY

echo "== worker plan on GPU 0 (queues it would consume)"
$PY - <<'PY'
from farm.gpu import detect_gpus
from farm.settings import WorkerSettings
from farm.worker import plan_worker
inv = detect_gpus()
for g in inv.gpus:
    print(plan_worker(WorkerSettings(), g))
if not inv.gpus:
    print("no GPU:", inv.error)
PY

echo "== media benchmark (CPU encode; engine vs ffmpeg), all on the CPU"
command -v ffmpeg >/dev/null && $PY tests/bench/bench_media.py --runs 5 || echo "ffmpeg missing: skipped"

echo "== media benchmark with the engine's input and verification decoded by NVDEC on GPU 0"
command -v ffmpeg >/dev/null && $PY tests/bench/bench_media.py --runs 5 --gpu 0 || echo "ffmpeg missing: skipped"
