"""The node API, Flower and `farm up` as an operator runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from farm.client import FarmClient
from farm.embedded import embedded_urls
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.settings import DEV_SECRET, ClusterSettings
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, sqlite_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, sqlite_url))
    yield c
    c.stop()


def start_node(cluster: Cluster, env: dict[str, str] | None = None) -> str:
    port = free_port()
    cluster.spawn("node", "--port", str(port), log="node.log", env=env)
    base = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        try:
            httpx.get(f"{base}/healthz", timeout=10)
            return True
        except httpx.HTTPError:
            return False

    wait_for(listening, timeout=30, what="the node API")
    return base


def test_node_api_status_health_metrics(cluster: Cluster) -> None:
    cluster.start_worker()
    base = start_node(cluster)
    health = httpx.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["checks"] == {"registry": True, "database": True, "broker": True}
    status = httpx.get(f"{base}/status", timeout=10).json()
    assert len(status["workers"]) == 1
    worker = status["workers"][0]
    assert "transcode.cpu.h264" in worker["queues"] and worker["capacity"] == 1
    assert worker["gpus"] == [] and "h264" in worker["cpu_codecs"]
    assert status["queues"]["transcode.cpu.h264"] == 0
    assert "secret" not in status["settings"]
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "farm_workers_live" in metrics and "livepeer_segment_transcoded_total" in metrics
    # The health checks a compose file runs.
    farm = [sys.executable, "-m", "farm.cli", "health"]
    assert subprocess.run([*farm, "worker"], env=cluster.env, capture_output=True).returncode == 0
    assert subprocess.run([*farm, "node", "--url", base], capture_output=True).returncode == 0
    down = subprocess.run(
        [*farm, "node", "--url", f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True
    )
    assert down.returncode == 1 and "unreachable" in down.stderr


def test_node_api_unhealthy_when_broker_down(cluster: Cluster) -> None:
    dead = free_port()  # nothing listens there
    env = dict(
        cluster.env,
        FARM_BROKER_URL=f"redis://127.0.0.1:{dead}/0",
        FARM_REGISTRY_URL=cluster.env["FARM_BROKER_URL"],
    )
    env.pop("FARM_RESULT_BACKEND", None)
    base = start_node(cluster, env)
    health = httpx.get(f"{base}/healthz", timeout=20)
    assert health.status_code == 503
    assert health.json()["checks"]["broker"] is False


def test_flower_requires_auth_and_shows_workers(cluster: Cluster) -> None:
    cluster.start_worker()
    port = free_port()
    env = dict(cluster.env, FARM_FLOWER_PORT=str(port), FARM_FLOWER_BASIC_AUTH="ops:pw-123")
    cluster.spawn("flower", log="flower.log", env=env)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=30, what="flower")
    assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
    assert httpx.get(f"{base}/api/workers", auth=("ops", "wrong"), timeout=5).status_code == 401

    def workers() -> dict[str, object]:
        r = httpx.get(f"{base}/api/workers?refresh=1", auth=("ops", "pw-123"), timeout=10)
        assert r.status_code == 200
        return r.json()  # type: ignore[no-any-return]

    names = wait_for(
        lambda: [n for n in workers() if n.startswith("cpu@")],
        timeout=30,
        what="the worker in Flower",
    )
    assert names


def test_farm_up_embedded_runs_a_job_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port, gw_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["FARM_HEARTBEAT_S"] = "0.5"
    with open(tmp_path / "up.log", "ab") as log:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "farm.cli",
                "up",
                "--home",
                str(home),
                "--port",
                str(port),
                "--gateway-port",
                str(gw_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, what="farm up's node API")
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/status").json()["workers"],
            timeout=60,
            what="a worker",
        )
        urls = embedded_urls(home, f"redis+socket://{home.resolve() / 'redis.sock'}")
        settings = ClusterSettings(
            broker_url=urls["FARM_BROKER_URL"],
            database_url=urls["FARM_DATABASE_URL"],
            blob_url=urls["FARM_BLOB_URL"],
        )
        with FarmClient(settings) as client:
            job = client.submit(
                make_segment(320, 240, 30, 1.0), parse_profiles("P144p30fps16x9"), duration=1.0
            )
            assert client.wait(job.id, timeout=60).renditions[0].frames == 30
        # The gateway in front of it takes a segment from a key it issues.
        gateway = f"http://127.0.0.1:{gw_port}"
        wait_for(lambda: _get_ok(f"{gateway}/healthz"), timeout=60, what="farm up's gateway")
        created = httpx.post(
            f"{gateway}/admin/keys",
            json={"name": "t", "credits": 10**9},
            headers={"Authorization": f"Bearer {DEV_SECRET}"},
            timeout=10,
        )
        pushed = httpx.post(
            f"{gateway}/live/demo/0.ts",
            content=make_segment(320, 240, 30, 1.0),
            headers={
                "Authorization": f"Bearer {created.json()['key']}",
                "Content-Duration": "1000",
            },
            timeout=60,
        )
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()["orchestrator"] == "local"
        banner = (tmp_path / "up.log").read_text()
        assert "farm submit" in banner
        assert f"FARM_NODE_URL=http://127.0.0.1:{port}" in banner
        # Each serves its own metrics: an alert on a shared name fires once, not twice.
        node_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        gateway_text = httpx.get(f"{gateway}/metrics", timeout=10).text
        assert "farm_workers_live" in node_text and "farm_workers_live" not in gateway_text
        assert "livepeer_success_rate" in gateway_text and "livepeer_success_rate" not in node_text
        assert 'livepeer_segment_transcoded_total{profiles="P144p30fps16x9"} 1.0' in node_text
        assert "livepeer_current_sessions_total 1.0" in gateway_text
        # farm status finds the cluster from the printed variables, and reads the gateway's
        # pool with farm up's development token without being given it.
        shown = subprocess.run(
            [sys.executable, "-m", "farm.cli", "status"],
            env={
                **env,
                "FARM_NODE_URL": f"http://127.0.0.1:{port}",
                "FARM_GATEWAY_URL": gateway,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "ORCHESTRATORS" in shown.stdout and "not read" not in shown.stdout, shown.stdout
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 5  # redis, node, worker (+ its pool), beat, gateway
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        time.sleep(0.5)
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
        assert not (home / "redis.sock").exists()
    finally:
        if up.poll() is None:
            up.kill()


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
