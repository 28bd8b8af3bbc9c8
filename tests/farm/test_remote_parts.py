"""The parts of remote attach on their own: secrets, signed URLs, certificate pins, backoff,
queue assignment and broker URLs; registration refused on a RabbitMQ cluster; and the node's
job calls and uploads refusing what a transcoder should not send."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from farm.errors import AccessDenied, ConfigError, RegistrationInvalid
from farm.jobs import JobView
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
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
from farm.tasks import output_key
from tests.farm.harness import wait_for
from tests.farm.remote_harness import SECRET, Orchestrator, orchestrator, pings

LADDER = parse_profiles("P144p30fps16x9")


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


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    """A node on 127.0.0.1 that takes uploads of at most 1000 bytes."""
    home = tmp_path_factory.mktemp("node")
    with orchestrator(home, "127.0.0.1", FARM_MAX_BLOB_BYTES="1000") as made:
        yield made


def _attach(https: httpx.Client) -> tuple[dict[str, Any], dict[str, str]]:
    """A registered transcoder's grant and its Authorization header."""
    grant = https.post(
        "/transcoders/register", json={"secret": SECRET, "capacity": 1, "cpu_codecs": ["h264"]}
    ).json()
    return grant, {"Authorization": f"Bearer {grant['id']}:{grant['credential']['password']}"}


def _result(job: JobView, key: str) -> dict[str, Any]:
    """A transcode task's result for ``job``'s one 144p rendition stored at ``key``."""
    rendition = {
        "name": "P144p30fps16x9", "key": key, "format": "mpegts", "encoder": "libx264",
        "width": 256, "height": 144, "frames": 15, "pixels": 15 * 256 * 144, "bytes": 100,
        "start": 0.0, "duration": 0.5,
    }  # fmt: skip
    return {
        "job_id": job.id, "renditions": [rendition], "decoder": "h264", "decoded_frames": 15,
        "decoded_pixels": 15 * 160 * 96, "encoded_pixels": rendition["pixels"],
        "input_start": 0.0, "input_duration": 0.5, "worker": "w", "timings": {"engine": 0.1},
    }  # fmt: skip


def test_a_job_ends_only_by_the_attempt_that_claimed_it(small_node: Orchestrator) -> None:
    client = small_node.cluster.client()
    with small_node.https() as https:
        a, auth_a = _attach(https)
        b, auth_b = _attach(https)
        job = client.submit(make_segment(160, 96, 30, 0.5), LADDER, duration=0.5)
        key = output_key(job.id, "P144p30fps16x9", "mpegts", 1)
        calls = f"/transcoders/jobs/{job.id}"
        mine = {"task_id": job.task_id, "worker": f"{a['name']}@host/1"}
        done = {**mine, "result": _result(job, key)}
        failed = {**mine, "code": "input_invalid", "error": "no video", "final": True}
        # Never claimed: neither a result nor a failure ends the job.
        assert https.post(f"{calls}/complete", json=done, headers=auth_a).status_code == 403
        assert https.post(f"{calls}/fail", json=failed, headers=auth_a).status_code == 403
        assert client.get(job.id).state == "queued"
        # Claimed by B: A cannot end B's attempt, under B's name or its own.
        theirs = {"task_id": job.task_id, "worker": f"{b['name']}@host/1"}
        assert https.post(f"{calls}/claim", json=theirs, headers=auth_b).json()["status"] == (
            "started"
        )
        assert https.post(f"{calls}/complete", json=done, headers=auth_a).status_code == 403
        assert https.post(f"{calls}/fail", json=failed, headers=auth_a).status_code == 403
        assert client.get(job.id).state == "running"
        # B's own result must be the job's whole, uploaded result.
        done = {**theirs, "result": _result(job, key)}
        partial = {**done, "result": {**done["result"], "renditions": []}}
        for bad in (
            {**done, "result": {"renditions": "garbage", "encoded_pixels": "lots"}},
            partial,
            {**done, "result": {**done["result"], "encoded_pixels": 1}},
            {**done, "result": {**done["result"], "job_id": "another"}},
            done,  # its rendition was never uploaded
        ):
            refused = https.post(f"{calls}/complete", json=bad, headers=auth_b)
            assert refused.status_code == 422 and refused.json()["error"] == "request_invalid"
        assert client.get(job.id).state == "running"
        sign = {"job_id": job.id, "method": "PUT", "key": key}
        url = https.post("/transcoders/sign", json=sign, headers=auth_b).json()["url"]
        assert https.put(url, content=b"\x47" * 100).is_success
        assert https.post(f"{calls}/complete", json=done, headers=auth_b).json() == {"won": True}
        # A retried call finds its attempt finished: nothing changes.
        assert https.post(f"{calls}/complete", json=done, headers=auth_b).json() == {"won": False}
        again = {**theirs, "code": "input_invalid", "error": "no video", "final": True}
        assert https.post(f"{calls}/fail", json=again, headers=auth_b).json() == {"recorded": False}
        assert client.get(job.id).state == "done"


def test_malformed_node_requests_are_clear_4xx(small_node: Orchestrator) -> None:
    client = small_node.cluster.client()
    with small_node.https() as https:
        grant, auth = _attach(https)

        def post(path: str, raw: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
            json_type = {"Content-Type": "application/json"}
            return https.post(path, content=raw, headers={**json_type, **(headers or {})})

        # JSON's NaN and infinities: refused as invalid, not echoed into a 500.
        nan = post("/transcoders/register", b'{"secret": "x", "capacity": NaN}')
        assert nan.status_code == 422 and nan.json()["error"] == "request_invalid"
        assert "capacity" in nan.json()["message"]
        assert post("/transcoders/heartbeat", b'{"load": 1e400}', auth).status_code == 422
        huge = {"secret": SECRET, "capacity": 1, "cpu_codecs": ["h264"], "region": "x" * 10**5}
        assert https.post("/transcoders/register", json=huge).status_code == 422
        greedy = {"secret": SECRET, "capacity": 10**30, "cpu_codecs": ["h264"]}
        assert https.post("/transcoders/register", json=greedy).status_code == 422
        # Starlette's own refusals come in the same body as every other error.
        missing = https.get("/no/such/route")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        garbled = post("/transcoders/heartbeat", b'{"load": "\xff\xfe"}', auth)
        assert garbled.status_code == 400 and garbled.json()["error"] == "bad_request"
        assert https.get("/transcoders/register").json()["error"] == "method_not_allowed"
        gpus = b'{"secret": "%s", "capacity": 1, "gpus": [{"memory_free": Infinity}]}'
        assert post("/transcoders/register", gpus % SECRET.encode()).status_code == 422
        # What the job table cannot hold (NUL, past its columns) is refused up front.
        job = client.submit(make_segment(160, 96, 30, 0.5), LADDER, duration=0.5)
        worker = f"{grant['name']}@host/1"
        for path, body in (
            ("/transcoders/jobs/a%00b/claim", {"task_id": job.task_id, "worker": worker}),
            ("/transcoders/jobs/" + "x" * 65 + "/claim", {"task_id": "t", "worker": worker}),
            (f"/transcoders/jobs/{job.id}/claim", {"task_id": "t" * 129, "worker": worker}),
            (f"/transcoders/jobs/{job.id}/claim", {"task_id": "t\x00", "worker": worker}),
            ("/transcoders/sign", {"job_id": "a\x00", "method": "GET", "key": "x"}),
        ):
            refused = https.post(path, json=body, headers=auth)
            assert refused.status_code == 422, (path, refused.text)
        claim = {"task_id": job.task_id, "worker": worker}
        assert https.post(f"/transcoders/jobs/{job.id}/claim", json=claim, headers=auth).is_success
        timings = b'{"task_id": "%s", "worker": "%s", "result": {}, "timings": {"engine": NaN}}'
        raw = timings % (job.task_id.encode(), worker.encode())
        assert post(f"/transcoders/jobs/{job.id}/complete", raw, auth).status_code == 422
        assert client.get(job.id).state == "running"
        # Uploads past FARM_MAX_BLOB_BYTES: 413, whether declared or streamed without a length.
        key = output_key(job.id, "P144p30fps16x9", "mpegts", 1)
        sign = {"job_id": job.id, "method": "PUT", "key": key}
        url = https.post("/transcoders/sign", json=sign, headers=auth).json()["url"]
        declared = https.put(url, content=b"x" * 1001)
        assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"
        streamed = https.put(url, content=iter([b"x" * 600, b"x" * 600]))
        assert streamed.status_code == 413
        assert https.put(url, content=b"x" * 1000).is_success
        # A key that is not one of the job's renditions is never signed.
        odd = {"job_id": job.id, "method": "PUT", "key": f"jobs/{job.id}/out/../../x"}
        assert https.post("/transcoders/sign", json=odd, headers=auth).status_code == 403
        # Nor an attempt's keys before that attempt exists.
        for attempt in ("2", "01", "0"):
            ahead = key.replace("/out/1/", f"/out/{attempt}/")
            ahead_sign = {"job_id": job.id, "method": "PUT", "key": ahead}
            assert https.post("/transcoders/sign", json=ahead_sign, headers=auth).status_code == 403
        # The staking routes keep their own error body for a malformed one.
        admin = {"Authorization": "Bearer farm-dev-secret"}
        terms = post("/chain/config", b'{"reward_cut": NaN, "fee_share": 1}', admin)
        assert terms.status_code == 422 and "reward_cut" in terms.json()["error"]["message"]


def test_a_node_whose_redis_goes_away_answers_503_then_serves_again(tmp_path: Path) -> None:
    with orchestrator(tmp_path, "127.0.0.1", proxied=True) as orch, orch.https() as https:
        assert orch.proxy is not None
        _, auth = _attach(https)
        assert https.post("/transcoders/heartbeat", json={"load": 0}, headers=auth).is_success
        orch.proxy.cut()
        down = https.post("/transcoders/heartbeat", json={"load": 0}, headers=auth)
        assert down.status_code == 503, down.text
        assert down.json() == {"error": "service_unavailable", "message": "Redis unreachable"}
        assert https.get("/healthz").status_code == 503
        orch.proxy.restore()
        wait_for(
            lambda: https.post("/transcoders/heartbeat", json={"load": 0}, headers=auth).is_success,
            timeout=30,
            what="the node to use Redis again",
        )
