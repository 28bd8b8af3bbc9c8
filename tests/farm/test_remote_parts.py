"""The parts of remote attach on their own: secrets, signed URLs, certificate pins, backoff,
queue assignment and broker URLs; and registration refused on a RabbitMQ cluster."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from farm.errors import AccessDenied, ConfigError, RegistrationInvalid
from farm.remote.api import queues_for
from farm.remote.credentials import broker_url_for, password_hash
from farm.remote.secrets import read_secret
from farm.remote.signing import UrlSigner
from farm.remote.tls import (
    ensure_certificate,
    fingerprint,
    fingerprint_of_file,
    normalise_fingerprint,
)
from farm.remote.transcoder import Backoff, parse_addr
from tests.farm.harness import wait_for
from tests.farm.remote_harness import SECRET, Orchestrator, orchestrator, pings


def test_secret_is_the_value_or_a_file(tmp_path: Path) -> None:
    assert read_secret("s3cret") == "s3cret"
    path = tmp_path / "orch-secret"
    path.write_text("from-file\n")
    assert read_secret(str(path)) == "from-file"
    with pytest.raises(ConfigError, match="does not exist"):
        read_secret(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="does not exist"):
        read_secret("./missing-secret")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        read_secret(str(tmp_path / "empty"))


def test_signed_urls_cover_method_key_expiry_and_transcoder() -> None:
    signer = UrlSigner("cluster-secret", ttl_s=60)
    now = time.time()
    url = signer.sign("get", "jobs/j1/in", "t1", now=now)
    assert url.method == "GET" and url.expires == int(now + 60)
    assert url.path.startswith("/blobs/jobs/j1/in?t=t1&e=")
    signer.check("GET", "jobs/j1/in", "t1", url.expires, url.signature, now=now)
    for method, key, who, expires in (
        ("PUT", "jobs/j1/in", "t1", url.expires),
        ("GET", "jobs/j2/in", "t1", url.expires),
        ("GET", "jobs/j1/in", "t2", url.expires),
        ("GET", "jobs/j1/in", "t1", url.expires + 3600),
    ):
        with pytest.raises(AccessDenied, match="bad signature"):
            signer.check(method, key, who, expires, url.signature, now=now)
    with pytest.raises(AccessDenied, match="expired"):
        signer.check("GET", "jobs/j1/in", "t1", url.expires, url.signature, now=now + 61)
    other = UrlSigner("another-secret", ttl_s=60)
    with pytest.raises(AccessDenied):
        other.check("GET", "jobs/j1/in", "t1", url.expires, url.signature, now=now)


def test_certificate_is_made_once_and_fingerprinted_as_openssl_does(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "tls", ("10.9.8.7", "orch.example"))
    pin = fingerprint_of_file(cert)
    assert ensure_certificate(tmp_path / "tls") == (cert, key)
    assert fingerprint_of_file(cert) == pin  # kept, not remade
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert fingerprint(der) == pin
    openssl = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256", "-ext",
         "subjectAltName"],
        capture_output=True, text=True,
    )  # fmt: skip
    if openssl.returncode == 0:
        assert pin in openssl.stdout
        assert "10.9.8.7" in openssl.stdout and "orch.example" in openssl.stdout
    assert normalise_fingerprint(pin.replace(":", "").lower()) == pin
    with pytest.raises(ConfigError, match="SHA-256"):
        normalise_fingerprint("AB:CD")
    with pytest.raises(ConfigError, match="does not exist"):
        ensure_certificate(tmp_path, cert=tmp_path / "no.crt", key=tmp_path / "no.key")


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(cap_s=60.0)
    delays = [backoff.next() for _ in range(40)]
    assert delays[0] <= 0.75 and max(delays) <= 60.0
    assert delays[-1] >= 30.0  # at the cap, with jitter
    backoff.reset()
    assert backoff.next() <= 0.75


def test_addresses_queues_and_broker_urls() -> None:
    assert parse_addr("10.0.0.1:8935") == ("10.0.0.1", 8935)
    assert parse_addr("[::1]:8935") == ("::1", 8935)
    for bad in ("nohost", "host:", "host:99999", ":8935"):
        with pytest.raises(ConfigError):
            parse_addr(bad)
    assert queues_for(["h264"], ["h264", "hevc"]) == ["transcode.gpu.h264"]
    assert queues_for([], ["h264", "hevc", "nope"]) == ["transcode.cpu.h264", "transcode.cpu.hevc"]
    with pytest.raises(RegistrationInvalid):
        queues_for([], ["nope"])
    url = broker_url_for("redis://admin:pw@10.0.0.5:6379/0", "farm-t", "p/w+x")
    assert url == "redis://farm-t:p%2Fw%2Bx@10.0.0.5:6379/0"
    assert len(password_hash("x")) == 64


@pytest.fixture
def rabbit_orch(tmp_path: Path, amqp_url: str) -> Iterator[Orchestrator]:
    from tests.farm.remote_harness import PrivateRedis

    registry = PrivateRedis("127.0.0.1", tmp_path / "registry").start()
    try:
        with orchestrator(
            tmp_path,
            "127.0.0.1",
            FARM_BROKER_URL=amqp_url,
            FARM_RESULT_BACKEND=registry.url,
            FARM_REGISTRY_URL=registry.url,
        ) as made:
            yield made
    finally:
        registry.stop()


def test_rabbitmq_cluster_refuses_remote_transcoders_clearly(rabbit_orch: Orchestrator) -> None:
    with rabbit_orch.https() as https:
        refused = https.post(
            "/transcoders/register",
            json={"secret": SECRET, "capacity": 1, "cpu_codecs": ["h264"]},
        )
    assert refused.status_code == 501
    assert "need a Redis broker" in refused.json()["message"]
    proc = rabbit_orch.transcoder(None)
    assert proc.wait(timeout=60) == 1
    log = (rabbit_orch.cluster.home / "transcoder.log").read_text()
    assert "need a Redis broker" in log
    listed = subprocess.run(
        [sys.executable, "-m", "farm.cli", "transcoders"],
        env=rabbit_orch.cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # go-livepeer transcoders attach with any broker: the listing still works, and says why
    # farm transcoders cannot attach here.
    assert listed.returncode == 0, listed.stderr
    assert "need a Redis broker" in listed.stderr
    assert "no transcoder has attached" in listed.stdout


def test_broker_users_lost_by_redis_come_back_and_expire(tmp_path: Path) -> None:
    with (
        orchestrator(tmp_path, "127.0.0.1", FARM_TRANSCODER_CREDENTIAL_TTL_S="4") as orch,
        orch.https() as https,
    ):
        grant = https.post(
            "/transcoders/register",
            json={"secret": SECRET, "capacity": 1, "cpu_codecs": ["h264"]},
        ).json()
        user = grant["credential"]["user"]
        admin = orch.broker.admin()
        admin.execute_command("ACL", "DELUSER", user)  # as a Redis restart without an ACL file
        own = redis.Redis.from_url(grant["broker_url"], socket_timeout=5)
        wait_for(lambda: pings(own), timeout=10, what="the node to restore the broker user")
        auth = {"Authorization": f"Bearer {grant['id']}:{grant['credential']['password']}"}
        assert https.post("/transcoders/heartbeat", json={"load": 0}, headers=auth).is_success
        # No more heartbeats: the credential expires, in the roster and on the broker.
        wait_for(
            lambda: admin.execute_command("ACL", "GETUSER", user) is None,
            timeout=20,
            what="the credential to expire",
        )
        refused = https.post("/transcoders/heartbeat", json={"load": 0}, headers=auth)
        assert refused.status_code == 401 and "expired" in refused.text
        own.close()
        admin.close()


def test_node_serves_http2_and_http11_over_tls(tmp_path: Path) -> None:
    import httpx

    with orchestrator(tmp_path, "127.0.0.1") as orch:
        context = ssl.create_default_context(cafile=str(orch.cert))
        context.check_hostname = False
        with httpx.Client(http2=True, verify=context, timeout=10) as h2:
            answer = h2.get(f"https://{orch.addr}/healthz")
        assert answer.http_version == "HTTP/2" and answer.status_code == 200
        with orch.https() as h11:
            assert h11.get("/healthz").http_version == "HTTP/1.1"
        shown = orch.farm("transcoders", "fingerprint")
        assert shown.returncode == 0 and shown.stdout.strip() == orch.pin()
        assert orch.pin() in (orch.cluster.home / "node.log").read_text()
