"""What the metrics say about attempts and jobs: failed, lost and permanent failures counted,
and the cluster gauges reporting only what exists now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from farm import metrics
from farm.client import JobFailedError
from farm.jobs import JobStore
from farm.media.profiles import parse_profiles
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for

LADDER = parse_profiles("P144p30fps16x9")


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> JobStore:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    s = JobStore(url)
    s.create_schema()
    request.addfinalizer(s.engine.dispose)
    return s


def test_an_attempt_whose_worker_died_counts_as_worker_lost(store: JobStore) -> None:
    store.create(
        "j1",
        kind="transcode",
        queue="transcode.cpu.h264",
        spec={"need": {"codec": "h264", "renditions": 1, "device": "any"}},
        task_id="j1.1",
        timeout_s=10.0,
        queued_timeout_s=5.0,
    )
    name = "livepeer_segment_transcode_failed_total"
    before = _sample(name, error_code="worker_lost")
    store.start_attempt("j1", "j1.1", "w1", "w1")
    assert _sample(name, error_code="worker_lost") == before
    # The message comes back (its worker was killed): the running attempt was lost.
    store.start_attempt("j1", "j1.1", "w2", "w2")
    assert _sample(name, error_code="worker_lost") == before + 1


def test_job_states_gauge_reports_every_state_and_only_live_queues() -> None:
    from farm.jobs.models import JobState

    states = {v for k, v in vars(JobState).items() if k.isupper() and isinstance(v, str)}
    assert set(metrics.JOB_STATE_NAMES) == states
    metrics.set_cluster_state({"cpu": 1}, 1, 0, {"transcode.cpu.h264": 3}, {"done": 2})
    metrics.set_cluster_state({"cpu": 1}, 1, 0, {"transcode.cpu.av1": 1}, {"failed": 1})
    assert metrics.REGISTRY.get_sample_value("farm_jobs", {"state": "done"}) == 0
    assert metrics.REGISTRY.get_sample_value("farm_jobs", {"state": "queued"}) == 0
    assert metrics.REGISTRY.get_sample_value("farm_jobs", {"state": "failed"}) == 1
    depth = metrics.REGISTRY.get_sample_value
    assert depth("farm_queue_depth", {"queue": "transcode.cpu.h264"}) is None
    assert depth("farm_queue_depth", {"queue": "transcode.cpu.av1"}) == 1


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, sqlite_url: str) -> Iterator[Cluster]:
    env = cluster_env(tmp_path, redis_url, sqlite_url)
    (tmp_path / "metrics").mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    c = Cluster(tmp_path, env)
    yield c
    c.stop()


def test_a_bad_input_is_counted_shown_and_logged_in_one_line(cluster: Cluster) -> None:
    proc = cluster.start_worker()
    worker = cluster.worker_of(proc)
    assert worker is not None
    port = free_port()
    cluster.spawn("node", "--port", str(port), log="node.log")
    base = f"http://127.0.0.1:{port}"
    client = cluster.client()
    bad = client.submit(b"\x47" + b"not a transport stream" * 50, LADDER)
    with pytest.raises(JobFailedError):
        client.wait(bad.id, timeout=60)

    def scraped() -> str:
        try:
            return httpx.get(f"{base}/metrics", timeout=5).text
        except httpx.HTTPError:
            return ""

    # The worker's counters reach the node's /metrics through the shared directory.
    text = str(wait_for(scraped, timeout=30, what="the node's /metrics"))
    assert 'livepeer_segment_transcode_failed_total{error_code="input_invalid"} 1.0' in text
    assert 'farm_jobs_failed_total{error_code="input_invalid"} 1.0' in text
    assert 'farm_jobs{state="running"} 0.0' in text

    # farm job: who finished it, and each attempt's code and end.
    shown = cluster.farm("job", bad.id)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["state"] == "failed" and "completed_by" in job and job["finished_at"]
    (attempt,) = job["attempt_log"]
    assert attempt["error_code"] == "input_invalid" and attempt["finished_at"]
    # One name for the worker: the registry's (farm status) is the attempt log's and Celery's.
    assert attempt["worker"] == worker.worker
    pinged = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "farm.celery_app", "inspect", "ping", "-t", "10"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    assert worker.worker in pinged.stdout

    # The permanent failure is one warning line in the worker's log, no traceback.
    log = "\n".join(p.read_text() for p in cluster.home.glob("worker-*.log"))
    assert "input_invalid" in log
    assert "Traceback" not in log, log


def test_a_dead_workers_gpus_leave_the_shared_directory_too(tmp_path: Path) -> None:
    # In multiprocess mode (the node beside prefork workers) a gauge series cannot be removed
    # from the directory; the scrape-time state is kept out of it.
    script = """
from farm import metrics
gpu = {"index": 0, "name": "RTX", "utilization_gpu": 93}
metrics.set_gpus({"gpu0@a:1": [gpu], "gpu0@b:2": [gpu]})
metrics.set_gpus({"gpu0@b:2": [gpu]})
print(metrics.render().decode())
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert 'farm_gpu_utilization_percent{gpu="0",name="RTX",worker="gpu0@b:2"} 93.0' in done.stdout
    assert "gpu0@a:1" not in done.stdout
