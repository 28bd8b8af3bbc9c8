"""Remote transcoders attach to an orchestrator over a veth pair, from their own network
namespace, and work as its Celery workers through the node API."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from tests.farm.harness import wait_for
from tests.farm.remote_harness import Netns, Orchestrator, netns, orchestrator

LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    with netns() as made:
        yield made


@pytest.fixture
def orch(tmp_path: Path, ns: Netns) -> Iterator[Orchestrator]:
    with orchestrator(tmp_path, ns.host_ip) as made:
        yield made


def _exit(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    return proc.wait(timeout=timeout)


def _log(orch: Orchestrator, name: str = "transcoder.log") -> str:
    return (orch.cluster.home / name).read_text(errors="replace")


def test_transcoder_in_a_netns_attaches_and_transcodes(orch: Orchestrator, ns: Netns) -> None:
    # Nothing of the orchestrator is reachable from the namespace but over the veth pair.
    probe = subprocess.run(
        [*ns.prefix(), "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/6379"], capture_output=True
    )
    assert probe.returncode != 0
    orch.transcoder(ns, "--capacity", "2", "--region", "eu")
    (name,) = orch.wait_attached()
    client = orch.cluster.client()
    segment = make_segment(320, 240, 30, 1.0)
    jobs = [client.submit(segment, LADDER, duration=1.0) for _ in range(3)]
    pixels = 0
    for job in jobs:
        result = client.wait(job.id, timeout=90)
        assert result.worker.startswith(name + "@"), result.worker
        assert len(client.rendition_bytes(result.renditions[0])) == result.renditions[0].bytes
        pixels += result.encoded_pixels
    status = orch.status()
    assert status["RegisteredTranscodersNumber"] == 1
    (record,) = status["transcoders"]
    assert record["name"] == name and record["state"] == "active"
    assert record["capacity"] == 2 and record["region"] == "eu"
    assert record["address"] == ns.peer_ip
    assert record["queues"][0] == "transcode.cpu.h264" and "h264" in record["cpu_codecs"]
    assert record["segments"] == 3 and record["pixels"] == pixels
    remote = [w for w in status["workers"] if w["kind"] == "remote"]
    assert remote and remote[0]["capacity"] == 2
    listed = orch.farm("transcoders")
    assert listed.returncode == 0 and record["id"] in listed.stdout and str(pixels) in listed.stdout
    with orch.https() as https:
        text = https.get("/metrics").text
    assert "livepeer_transcoders_number 1.0" in text
    assert "livepeer_transcoders_capacity 2.0" in text
    line = f'farm_transcoder_pixels{{transcoder="{name}"}} '
    assert float(text.split(line, 1)[1].split()[0]) == pixels


def _nothing_attached(orch: Orchestrator) -> None:
    assert orch.remote_workers() == []
    assert orch.status()["transcoders"] == []


def test_refusals_are_clear_and_take_no_work(orch: Orchestrator, ns: Netns) -> None:
    wrong = orch.transcoder(ns, secret="not-the-secret", log="wrong.log")
    assert _exit(wrong) != 0
    assert "invalid secret" in _log(orch, "wrong.log")
    missing = orch.transcoder(ns, secret=str(orch.cluster.home / "no-such-file"), log="miss.log")
    assert _exit(missing) != 0
    assert "orchSecret file" in _log(orch, "miss.log") and "does not exist" in _log(
        orch, "miss.log"
    )
    zero = orch.transcoder(ns, "--capacity", "0", log="zero.log")
    assert _exit(zero) != 0
    assert "zero capacity" in _log(orch, "zero.log")
    pinned_wrong = orch.transcoder(
        ns, "--orch-cert-fingerprint", "AB" * 32, pin=False, log="pin.log"
    )
    assert _exit(pinned_wrong) != 0
    assert "refusing to send the secret" in _log(orch, "pin.log")
    _nothing_attached(orch)


def test_expired_credential_stops_the_transcoder(tmp_path: Path, ns: Netns) -> None:
    with orchestrator(tmp_path, ns.host_ip, FARM_TRANSCODER_CREDENTIAL_TTL_S="3") as orch:
        proc = orch.transcoder(ns)
        (name,) = orch.wait_attached()
        os.killpg(proc.pid, signal.SIGSTOP)  # a transcoder cut off for longer than the TTL
        wait_for(
            lambda: orch.status()["transcoders"][0]["state"] == "expired",
            timeout=30,
            what="the credential to expire",
        )
        user = f"farm-{name}"
        admin = orch.broker.admin()
        assert admin.execute_command("ACL", "GETUSER", user) is None
        admin.close()
        os.killpg(proc.pid, signal.SIGCONT)
        assert _exit(proc) != 0
        assert "credential expired" in _log(orch)
        client = orch.cluster.client()
        job = (
            client.submit(make_segment(160, 96, 30, 0.5), LADDER) if orch.remote_workers() else None
        )
        assert job is None, "an expired transcoder is still routed to"


@pytest.fixture
def patient_orch(tmp_path: Path, ns: Netns) -> Iterator[Orchestrator]:
    # While the second transcoder attaches, the reconciler finds no live worker for the job;
    # those passes are waiting, not attempts, so the default attempt limit is enough.
    with orchestrator(tmp_path, ns.host_ip) as made:
        yield made


@pytest.mark.parametrize("how", ["evict", "kill9"])
def test_transcoder_lost_mid_task_job_completes_once_elsewhere(
    patient_orch: Orchestrator, ns: Netns, how: str
) -> None:
    orch = patient_orch
    heavy = make_segment(1280, 720, 30, 8.0, audio=False)
    ladder = parse_profiles("P720p30fps16x9,P576p30fps16x9,P360p30fps16x9,P240p30fps16x9")
    doomed = orch.transcoder(ns, log="doomed.log")
    (doomed_name,) = orch.wait_attached()
    # No local worker and no beat: the node itself reconciles for its remote transcoders.
    client = orch.cluster.client()
    job = client.submit(heavy, ladder, duration=8.0)
    wait_for(lambda: client.get(job.id).state == "running", timeout=60, what="job running")
    assert client.get(job.id).worker == doomed_name
    if how == "evict":
        # Frozen mid-task while the command starts, so the eviction lands before it finishes.
        os.killpg(doomed.pid, signal.SIGSTOP)
        evicted = orch.farm("transcoders", "evict", doomed_name)
        assert evicted.returncode == 0, evicted.stderr
        os.killpg(doomed.pid, signal.SIGCONT)
        assert _exit(doomed) != 0
        assert "revoked" in _log(orch, "doomed.log")
    else:
        orch.cluster.kill9(doomed)
    assert client.get(job.id).state != "done"
    # The survivor verifies the node by CA instead of a pin.
    orch.transcoder(ns, "--orch-ca", str(orch.cert), pin=False, log="survivor.log")
    result = client.wait(job.id, timeout=240)
    survivor = [n for n in orch.remote_workers() if n != doomed_name]
    assert survivor and result.worker.startswith(survivor[0] + "@"), result.worker
    final = client.get(job.id, with_attempts=True)
    outcomes = [a.outcome for a in final.attempt_log]
    assert final.state == "done" and outcomes.count("done") == 1, outcomes
    assert final.publishes >= 2
    records = {t["name"]: t for t in orch.status()["transcoders"]}
    assert records[doomed_name]["segments"] == 0
    assert records[survivor[0]]["segments"] == 1
    if how == "evict":
        assert records[doomed_name]["state"] == "revoked"


def test_node_restart_transcoders_reconnect(orch: Orchestrator, ns: Netns) -> None:
    proc = orch.transcoder(ns)
    (name,) = orch.wait_attached()
    orch.stop_node()
    wait_for(lambda: "retrying in" in _log(orch), timeout=30, what="heartbeat retries")
    wait_for(lambda: not orch.remote_workers(), timeout=10, what="the registry entry to lapse")
    orch.start_node()
    wait_for(lambda: name in orch.remote_workers(), timeout=90, what="the transcoder back")
    # The transcoder logs it once the heartbeat the registry shows has been answered.
    wait_for(lambda: "heartbeats resumed" in _log(orch), timeout=10, what="its log line")
    assert proc.poll() is None
    client = orch.cluster.client()
    job = client.submit(make_segment(320, 240, 30, 1.0), LADDER, duration=1.0)
    assert client.wait(job.id, timeout=90).worker.startswith(name + "@")


def test_transcoder_started_before_its_node_keeps_trying(orch: Orchestrator, ns: Netns) -> None:
    orch.stop_node()
    late = orch.transcoder(ns, log="late.log")
    wait_for(lambda: "retrying in" in _log(orch, "late.log"), timeout=30, what="retries")
    assert late.poll() is None and orch.remote_workers() == []
    orch.start_node()
    orch.wait_attached()


def test_broker_credential_reaches_only_what_a_worker_needs(orch: Orchestrator) -> None:
    with orch.https() as https:
        grant = https.post(
            "/transcoders/register",
            json={"secret": orch.cluster.env["FARM_SECRET"], "capacity": 1, "cpu_codecs": ["h264"]},
        ).json()
    own = redis.Redis.from_url(grant["broker_url"], socket_timeout=5)
    own.lpush("transcode.cpu.h264", b"x")
    assert own.rpop("transcode.cpu.h264") == b"x"
    for forbidden in (
        lambda: own.get("farm:blob:jobs/x/in"),
        lambda: own.set("farm:worker:fake", "{}"),
        lambda: own.lpush("transcode.gpu.h264", b"steal"),
        lambda: own.hgetall("farm:transcoder:" + grant["id"]),
        lambda: own.flushdb(),
        lambda: own.execute_command("ACL", "LIST"),
        lambda: own.keys("*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()
    evicted = orch.farm("transcoders", "evict", grant["id"])
    assert evicted.returncode == 0
    with pytest.raises(redis.exceptions.ConnectionError):
        own.ping()  # its connection was cut
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(grant["broker_url"], socket_timeout=5).ping()
    own.close()
    with orch.https() as https:
        auth = {"Authorization": f"Bearer {grant['id']}:{grant['credential']['password']}"}
        refused = https.post("/transcoders/heartbeat", json={"load": 0}, headers=auth)
    assert refused.status_code == 401 and "revoked" in refused.text


def test_signed_urls_and_job_calls_are_scoped(orch: Orchestrator) -> None:
    client = orch.cluster.client()
    with orch.https() as https:
        grant = https.post(
            "/transcoders/register",
            json={"secret": orch.cluster.env["FARM_SECRET"], "capacity": 1, "cpu_codecs": ["h264"]},
        ).json()
        auth = {"Authorization": f"Bearer {grant['id']}:{grant['credential']['password']}"}
        segment = make_segment(160, 96, 30, 0.5)
        job = client.submit(segment, LADDER, duration=0.5)
        key = job.spec["input_key"]
        sign = {"job_id": job.id, "method": "GET", "key": key}
        # Not claimed yet: no URL for it.
        assert https.post("/transcoders/sign", json=sign, headers=auth).status_code == 403
        worker = f"{grant['name']}@test/1"
        claim = {"task_id": job.task_id, "worker": worker}
        claimed = https.post(f"/transcoders/jobs/{job.id}/claim", json=claim, headers=auth)
        assert claimed.json()["status"] == "started"
        url = https.post("/transcoders/sign", json=sign, headers=auth).json()["url"]
        assert https.get(url).content == segment
        tampered = url.replace("/in?", "/out/x.ts?")
        assert https.get(tampered).status_code == 403
        assert https.put(url, content=b"overwrite").status_code == 403  # signed for GET
        other = {"job_id": job.id, "method": "PUT", "key": "jobs/other/out/x.ts"}
        assert https.post("/transcoders/sign", json=other, headers=auth).status_code == 403
        stranger = {"task_id": job.task_id, "worker": "transcoder-someone@x/1"}
        failure = {**stranger, "code": "input_invalid", "error": "x", "final": True}
        assert (
            https.post(f"/transcoders/jobs/{job.id}/fail", json=failure, headers=auth).status_code
            == 403
        )
        assert https.post("/transcoders/heartbeat", json={"load": 0}).status_code == 401
