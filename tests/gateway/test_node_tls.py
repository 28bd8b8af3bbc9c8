"""A node API served only over HTTPS: the gateway's probes, the exporter and farm status
verify it by its pinned certificate or a CA file, and refuse anything else."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from farm.registry import Capabilities
from farm.remote.tls import ensure_certificate, fingerprint_of_file
from gateway.pool import Pool
from gateway.settings import OrchestratorConfig
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for


@dataclass
class TlsNode:
    cluster: Cluster
    url: str
    cert: Path

    def config(self, **verify: str) -> OrchestratorConfig:
        env = self.cluster.env
        return OrchestratorConfig(
            name="tls",
            node_url=self.url,
            broker_url=env["FARM_BROKER_URL"],
            database_url=env["FARM_DATABASE_URL"],
            blob_url=env["FARM_BLOB_URL"],
            **verify,
        )

    def advertise(self) -> None:
        """A worker's heartbeat, so the node reports capacity."""
        registry = self.cluster.registry()
        registry.beat(Capabilities(worker="w@test:1", queues=["transcode.cpu.h264"], capacity=2))
        registry.close()


@pytest.fixture
def node(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[TlsNode]:
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    cert, key = ensure_certificate(tmp_path / "tls", ("127.0.0.1", "localhost"))
    port = free_port()
    cluster.spawn(
        "node",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--tls-cert={cert}",
        f"--tls-key={key}",
        log="node.log",
    )
    url = f"https://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", verify=False, timeout=2).status_code in (200, 503)
        except httpx.TransportError:
            return False

    wait_for(up, timeout=30, what="the node over HTTPS")
    yield TlsNode(cluster, url, cert)
    cluster.stop()


def _probe(node: TlsNode, **verify: str) -> tuple[bool, str | None]:
    pool = Pool([node.config(**verify)])
    try:
        node.advertise()
        pool.probe(pool.orchestrators[0])
        o = pool.orchestrators[0]
        return o.healthy, o.probe_error
    finally:
        pool.stop()


def test_gateway_probes_a_pinned_or_ca_verified_node(node: TlsNode) -> None:
    pin = fingerprint_of_file(node.cert)
    assert _probe(node, node_cert_fingerprint=pin) == (True, None)
    assert _probe(node, node_ca=str(node.cert)) == (True, None)


def test_gateway_refuses_a_node_it_cannot_trust(node: TlsNode, tmp_path: Path) -> None:
    other, _ = ensure_certificate(tmp_path / "other", ("127.0.0.1",))
    healthy, error = _probe(node, node_cert_fingerprint=fingerprint_of_file(other))
    assert not healthy and "not the pinned" in (error or ""), error
    healthy, error = _probe(node, node_ca=str(other))
    assert not healthy and "CERTIFICATE_VERIFY_FAILED" in (error or ""), error
    healthy, error = _probe(node)  # the system's CAs do not know a self-signed node
    assert not healthy and "CERTIFICATE_VERIFY_FAILED" in (error or ""), error
    healthy, error = _probe(node, node_ca=str(tmp_path / "missing.pem"))
    assert not healthy and "cannot read the node's CA file" in (error or ""), error


def test_farm_status_and_exporter_read_a_pinned_node(node: TlsNode) -> None:
    pin = fingerprint_of_file(node.cert)
    shown = node.cluster.farm("status", "--node-url", node.url, "--node-cert-fingerprint", pin)
    assert shown.returncode == 0, shown.stderr
    refused = node.cluster.farm("status", "--node-url", node.url)
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr

    for verify, up in ((["--node-cert-fingerprint", pin], "1.0"), ([], "0.0")):
        port = free_port()
        exporter = node.cluster.spawn(
            "exporter", "--node-url", node.url, *verify, "--port", str(port), log="exporter.log"
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda u=url: _answers(f"{u}/healthz"), timeout=30, what="the exporter")
            text = httpx.get(f"{url}/metrics", timeout=30).text
            assert f'farm_exporter_target_up{{target="node"}} {up}' in text, text[:2000]
        finally:
            exporter.terminate()
            exporter.wait(timeout=10)


def test_farm_health_checks_an_https_node(node: TlsNode, tmp_path: Path) -> None:
    # What a container health check runs against a node that serves only HTTPS.
    health = ("health", "node", "--url", node.url)
    by_ca = node.cluster.farm(*health, "--node-ca", str(node.cert))
    assert by_ca.returncode == 0 and "node healthy" in by_ca.stdout, by_ca.stderr
    pin = fingerprint_of_file(node.cert)
    assert node.cluster.farm(*health, "--node-cert-fingerprint", pin).returncode == 0
    untrusted = node.cluster.farm(*health)
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    other = ensure_certificate(tmp_path / "other", ("127.0.0.1",))[0]
    wrong_pin = node.cluster.farm(*health, "--node-cert-fingerprint", fingerprint_of_file(other))
    assert wrong_pin.returncode == 1 and wrong_pin.stderr.startswith("error:"), wrong_pin.stderr
    assert "Traceback" not in wrong_pin.stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
