"""farm status, farm exporter and the node's status page against a live cluster."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from farm.client import JobFailedError
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from tests.conftest import need_tool
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for

ADMIN = "ops-test-admin"
LADDER = parse_profiles("P144p30fps16x9")


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, sqlite_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, sqlite_url))
    yield c
    c.stop()


def serve(cluster: Cluster, *args: str, log: str, env: dict[str, str] | None = None) -> str:
    """Start ``farm ARGS --port P`` and wait until it answers /healthz; its base URL."""
    port = free_port()
    cluster.spawn(*args, "--port", str(port), log=log, env=env)
    base = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        try:
            httpx.get(f"{base}/healthz", timeout=5)
            return True
        except httpx.HTTPError:
            return False

    wait_for(listening, timeout=30, what=f"farm {args[0]}")
    return base


def test_status_exporter_and_page_show_the_live_cluster(cluster: Cluster) -> None:
    cluster.start_worker()
    node = serve(cluster, "node", log="node.log")
    worker = cluster.live()[0].worker
    client = cluster.client()
    done = client.submit(make_segment(160, 96, 30, 0.5), LADDER, duration=0.5)
    client.wait(done.id, timeout=60)
    bad = client.submit(b"\x47" + b"not a transport stream" * 50, LADDER)
    with pytest.raises(JobFailedError):
        client.wait(bad.id, timeout=60)

    gateway_env = dict(
        cluster.env,
        FARM_ADMIN_TOKEN=ADMIN,
        FARM_GATEWAY_DATABASE_URL=f"sqlite:///{cluster.home / 'gateway.db'}",
        FARM_GATEWAY_REDIS_URL=cluster.env["FARM_BROKER_URL"],
        FARM_GATEWAY_BLOB_URL=f"file://{cluster.home / 'gateway-blobs'}",
        FARM_PROBE_INTERVAL_S="0.5",
        FARM_ORCHESTRATORS=json.dumps(
            [
                {
                    "name": "orch-a",
                    "region": "eu",
                    "node_url": node,
                    "broker_url": cluster.env["FARM_BROKER_URL"],
                    "database_url": cluster.env["FARM_DATABASE_URL"],
                    "blob_url": cluster.env["FARM_BLOB_URL"],
                }
            ]
        ),
    )
    gateway = serve(cluster, "gateway", log="gateway.log", env=gateway_env)
    wait_for(
        lambda: httpx.get(f"{gateway}/healthz", timeout=5).status_code == 200,
        timeout=30,
        what="the gateway to probe its orchestrator",
    )

    # The terminal view, one shot: workers, queues, job states, the gateway's pool.
    shown = cluster.farm(
        "status", "--node-url", node, "--gateway-url", gateway, "--admin-token", ADMIN
    )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert worker in out and "transcode.cpu.h264" in out
    assert "done=1" in out and "failed=1" in out
    assert "orch-a" in out and " up " in out
    # Live: redrawn --count times (in place on a terminal; click drops the escape in a pipe).
    watched = cluster.farm("status", "--node-url", node, "--watch", "-n", "0.2", "--count", "2")
    assert watched.returncode == 0 and watched.stdout.count(f"farm status  {node}") == 2
    # The worker's row in each redraw (its own queue, transcode@<worker>, is listed too).
    rows = [line.split() for line in watched.stdout.splitlines()]
    assert sum(1 for row in rows if row and row[0] == worker) == 2

    # The status page: the live worker, its queue, the recent job and the failure.
    page = httpx.get(f"{node}/status.html", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for expected in (worker, "transcode.cpu.h264", done.id, bad.id, "input_invalid"):
        assert expected in page.text

    # The node refreshes the pool gauges on each scrape.
    scraped = httpx.get(f"{node}/metrics", timeout=10).text
    assert "livepeer_transcoders_number 1.0" in scraped
    assert "livepeer_transcoders_capacity 1.0" in scraped

    # The exporter: cluster state read from the node, the pool from the gateway.
    exporter_env = dict(cluster.env, FARM_ADMIN_TOKEN=ADMIN)
    exporter = serve(
        cluster,
        "exporter",
        "--node-url",
        node,
        "--gateway-url",
        gateway,
        log="exporter.log",
        env=exporter_env,
    )
    text = httpx.get(f"{exporter}/metrics", timeout=10).text
    for line in (
        'farm_exporter_target_up{target="node"} 1.0',
        'farm_exporter_target_up{target="gateway"} 1.0',
        "livepeer_transcoders_number 1.0",
        'farm_workers_live{kind="cpu"} 1.0',
        'farm_queue_depth{queue="transcode.cpu.h264"} 0.0',
        'farm_jobs{state="done"} 1.0',
        'farm_jobs{state="failed"} 1.0',
        'farm_orchestrator_healthy{orchestrator="orch-a",region="eu"} 1.0',
    ):
        assert line in text, line


def test_exporter_needs_the_controller_and_orchestrator_for_chain_state(
    cluster: Cluster,
) -> None:
    refused = cluster.farm("exporter", "--chain-url", "http://127.0.0.1:8545")
    assert refused.returncode == 1
    assert "Controller address" in refused.stderr


def test_status_fails_when_the_node_is_down(cluster: Cluster) -> None:
    down = cluster.farm("status", "--node-url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "NODE unreachable" in down.stdout and "unreachable" in down.stderr
    assert "FARM_NODE_URL" in down.stderr  # where the URL comes from


def test_status_page_in_headless_chromium(cluster: Cluster, tmp_path: Path) -> None:
    browser = need_tool("chromium", "chromium-browser", hint="apt-get install chromium")
    cluster.start_worker()
    node = serve(cluster, "node", log="node.log")
    worker = cluster.live()[0].worker
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            f"{node}/status.html?refresh=0",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<h2>Workers</h2>" in dom.stdout
    assert worker in dom.stdout
