"""go-livepeer transcoders join the farm: gRPC registration, segment push, /transcodeResults.

``farm node`` runs in its own process, served by hypercorn over TLS (a self-signed certificate
made here), gRPC and HTTPS on one port; transcoders are tests.farm.livepeer_transcoder, which speaks
to it as go-livepeer's transcoder does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from farm.client import FarmClient, JobFailedError
from farm.golivepeer import net_pb2
from farm.jobs import JobView
from farm.media.profiles import VideoProfile, parse_profiles
from farm.media.synth import make_segment
from farm.remote.tls import ensure_certificate
from tests.farm.harness import Cluster, check_renditions, cluster_env, free_port, wait_for
from tests.farm.livepeer_transcoder import LivepeerTranscoder, multipart

SECRET = "orch-secret-for-tests"
LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, as go-livepeer makes its own."""
    return ensure_certificate(directory, ("127.0.0.1", "localhost"))


class Node:
    """``farm node`` over TLS (hypercorn), where go-livepeer transcoders attach."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.transcoders: list[LivepeerTranscoder] = []
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        certfile, keyfile = make_cert(cluster.home)
        env = {**cluster.env, "FARM_SECRET": SECRET}
        self.proc = cluster.spawn(
            "-v",
            "node",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--tls-cert={certfile}",
            f"--tls-key={keyfile}",
            log="node.log",
            env=env,
        )
        self.http = httpx.Client(base_url=f"https://{self.addr}", verify=False, timeout=10)
        wait_for(self._up, timeout=30, what="the node API over HTTPS")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.cluster.logs()
        try:
            return self.http.get("/healthz").status_code in (200, 503)
        except httpx.TransportError:
            return False

    def transcoder(self, **kwargs: object) -> LivepeerTranscoder:
        t = LivepeerTranscoder(self.addr, kwargs.pop("secret", SECRET), **kwargs)  # type: ignore[arg-type]
        self.transcoders.append(t)
        return t

    def attach(self, **kwargs: Any) -> LivepeerTranscoder:
        """A transcoder registered and serving, once the bridge advertises its capacity."""
        t = self.transcoder(**kwargs)
        t.start()
        total = sum(x.capacity for x in self.transcoders if x.call is not None)
        wait_for(lambda: _golivepeer_live(self.cluster, total), what="the bridge's advertisement")
        return t

    def attached(self) -> dict[str, Any]:
        return dict(self.http.get("/golivepeer/transcoders").json())

    def close(self) -> None:
        for t in self.transcoders:
            t.close()
        self.transcoders.clear()
        self.http.close()


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    yield c
    c.stop()


@pytest.fixture
def node(cluster: Cluster) -> Iterator[Node]:
    n = Node(cluster)
    yield n
    n.close()


@pytest.fixture
def segment() -> bytes:
    return make_segment(320, 240, 30, 1.0)


def _golivepeer_live(cluster: Cluster, capacity: int) -> object:
    return [w for w in cluster.live() if w.kind == "golivepeer" and w.capacity == capacity]


def _encoders(client: FarmClient, job_id: str) -> set[str]:
    """Check the job's renditions; the encoders that made them."""
    result = check_renditions(client, job_id, [p.name for p in LADDER])
    return {r.encoder for r in result.renditions}


def test_job_completes_on_an_attached_golivepeer_transcoder(
    node: Node, cluster: Cluster, segment: bytes
) -> None:
    t = node.attach(capacity=2)
    assert node.attached()["capacity"] == 2
    status = node.http.get("/status").json()
    assert status["RegisteredTranscodersNumber"] == 1
    assert status["RegisteredTranscoders"][0]["Capacity"] == 2
    assert [w["kind"] for w in status["workers"]] == ["golivepeer"]
    client = cluster.client()
    job = client.submit(segment, LADDER, duration=1.0)
    assert job.queue == "transcode.cpu.h264"
    assert _encoders(client, job.id) == {"golivepeer/h264"}
    assert [n.taskId for n in t.notified] == t.posted and len(t.posted) == 1
    pixels = client.wait(job.id).encoded_pixels
    assert [x["pixels"] for x in node.attached()["transcoders"]] == [pixels]
    assert node.attached()["totals"]["127.0.0.1"]["pixels"] == pixels
    listed = _farm_transcoders(cluster)
    (entry,) = [t for t in listed if t["kind"] == "golivepeer"]
    assert entry["host"] == "127.0.0.1" and entry["capacity"] == 2
    assert (entry["total_segments"], entry["total_pixels"]) == (1, pixels)
    notify = t.notified[0]
    assert notify.profiles == b"invalid" and notify.segData.profiles == b"invalid"
    assert [p.name for p in notify.segData.fullProfiles] == [p.name for p in LADDER]
    assert notify.segData.duration == 1000
    wait_for(lambda: t.teardowns, what="the session teardown notify")
    assert t.teardowns == [notify.segData.auth_token.session_id]
    final = client.get(job.id, with_attempts=True)
    assert final.state == "done" and [a.outcome for a in final.attempt_log] == ["done"]
    assert not t.errors
    # The task's input URL dies with the task.
    assert node.http.get(notify.url).status_code == 404


def _farm_transcoders(cluster: Cluster) -> list[dict[str, Any]]:
    """``farm transcoders --json``, as an operator on any host would run it."""
    listed = cluster.farm("transcoders", "--json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_wrong_secret_and_zero_capacity_are_refused(node: Node, cluster: Cluster) -> None:
    refused = node.transcoder(secret="not-the-secret").register_only()
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.details() == "invalid secret"
    zero = node.transcoder(capacity=0).register_only()
    assert zero.details() == "zero capacity"
    assert node.attached()["transcoders"] == []
    assert not [w for w in cluster.live() if w.kind == "golivepeer"]


def test_evicted_host_is_dropped_and_refused_until_unbanned(
    node: Node, cluster: Cluster, segment: bytes
) -> None:
    held: list[net_pb2.NotifySegment] = []
    t = node.attach(on_notify=lambda n: bool(held.append(n)))
    (name,) = [x["name"] for x in node.attached()["transcoders"]]
    assert name.startswith("golivepeer-")
    client = cluster.client()
    job = client.submit(segment, LADDER, duration=1.0)
    wait_for(lambda: held, what="the segment pushed to the transcoder")
    unknown = cluster.farm("transcoders", "evict", "golivepeer-000000")
    assert unknown.returncode == 1 and "no go-livepeer transcoder" in unknown.stderr
    evicted = cluster.farm("transcoders", "evict", name, "--ban", "600")
    assert evicted.returncode == 0, evicted.stderr
    assert "evicted go-livepeer host 127.0.0.1" in evicted.stdout
    # Its node drops it at the next heartbeat; the task in flight goes back to the queue.
    wait_for(
        lambda: t._thread is not None and not t._thread.is_alive(),
        what="the evicted transcoder's stream to end",
    )
    assert node.attached()["transcoders"] == []
    refused = node.transcoder().register_only()
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "evicted until" in (refused.details() or "")
    listed = cluster.farm("transcoders")
    assert "go-livepeer host 127.0.0.1: evicted" in listed.stdout, listed.stdout
    # Lifted, the host attaches again and finishes the job the eviction put back.
    assert cluster.farm("transcoders", "unban", "127.0.0.1").returncode == 0
    again = cluster.farm("transcoders", "unban", "127.0.0.1")
    assert again.returncode == 1 and "not banned" in again.stderr
    node.transcoders.remove(t)
    t.close()
    node.attach()
    assert _encoders(client, job.id) == {"golivepeer/h264"}
    outcomes = [(a.outcome, a.error_code) for a in client.get(job.id, True).attempt_log]
    assert outcomes == [("failed", "transcoder_lost"), ("done", None)], outcomes


def test_unknown_grpc_method_is_unimplemented(node: Node) -> None:
    t = node.transcoder()
    for method in ("/net.Orchestrator/Nothing", "/net.AIWorker/RegisterAIWorker"):
        call = t.channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _post(node: Node, headers: dict[str, str], body: bytes = b"") -> httpx.Response:
    return node.http.post("/transcodeResults", content=body, headers=headers)


def test_transcode_results_refuses_bad_requests(node: Node) -> None:
    body, boundary = multipart([("video/mp2t", b"\x47" * 188, 100)])
    good = {
        "Authorization": "Livepeer-Transcoder-1.0",
        "Credentials": SECRET,
        "Content-Type": f"multipart/mixed; boundary={boundary}",
        "TaskId": "1",
        "Pixels": "100",
    }
    assert _post(node, {**good, "Credentials": "wrong"}, body).status_code == 401
    assert _post(node, {**good, "Authorization": "Basic x"}, body).status_code == 401
    assert _post(node, {k: v for k, v in good.items() if k != "Credentials"}).status_code == 401
    assert _post(node, {**good, "Content-Type": "text/plain"}, body).status_code == 415
    assert _post(node, {**good, "Content-Type": "multipart/mixed"}, body).status_code == 415
    assert _post(node, {**good, "TaskId": "abc"}, body).status_code == 400
    assert _post(node, {**good, "Pixels": "-1"}, body).status_code == 400
    # Numbers past int()'s digit limit are not numbers; a header that says "cap" is no cap.
    assert _post(node, {**good, "TaskId": "9" * 5000}, body).status_code == 400
    assert _post(node, {**good, "Pixels": "9" * 5000}, body).status_code == 400
    garbled = body.replace(b"Content-Length: 188", b"Content-Length: \xb2")
    assert _post(node, good, garbled).status_code == 400
    assert _post(node, good, body.replace(b"Pixels: 100", b"capped")).status_code == 400
    unknown = _post(node, {**good, "TaskId": "999"}, body)
    assert unknown.status_code == 400 and "no task 999" in unknown.text
    assert _post(node, good, body[: len(body) // 2]).status_code == 400


def _failed_job(node: Node, cluster: Cluster, segment: bytes, **transcoder: Any) -> JobView:
    """Submit a job to a transcoder that gets it wrong; the failed job with its attempts."""
    node.attach(**transcoder)
    client = cluster.client()
    job = client.submit(segment, LADDER, duration=1.0)
    with pytest.raises(JobFailedError):
        client.wait(job.id, timeout=60)
    return client.get(job.id, with_attempts=True)


def test_transcoding_error_fails_the_attempt_with_its_message(
    node: Node, cluster: Cluster, segment: bytes
) -> None:
    failed = _failed_job(node, cluster, segment, fail_with="Unsupported input pixel format")
    assert failed.error_code == "transcoder_error"
    assert "Unsupported input pixel format" in (failed.error or "")
    first = failed.attempt_log[0]
    assert first.error_code == "transcoder_error"
    assert "Unsupported input pixel format" in (first.error or "")


def test_overstated_pixels_fail_verification(node: Node, cluster: Cluster, segment: bytes) -> None:
    failed = _failed_job(node, cluster, segment, pixels_offset=1000)
    assert failed.error_code == "verification_failed"
    assert "pixel_count" in (failed.error or "")
    assert [x["pixels"] for x in node.attached()["transcoders"]] == [0]


def test_transcoder_disconnect_mid_task_completes_elsewhere_once(
    node: Node, cluster: Cluster, segment: bytes
) -> None:
    held: list[net_pb2.NotifySegment] = []
    t = node.attach(on_notify=lambda n: bool(held.append(n)))
    client = cluster.client()
    job = client.submit(segment, LADDER, duration=1.0)
    wait_for(lambda: held, what="the segment pushed to the transcoder")
    local = cluster.start_worker()
    t.close()  # gone mid-task: the task goes back to the queue
    assert _encoders(client, job.id) == {"libx264"}
    final = client.get(job.id, with_attempts=True)
    assert final.state == "done"
    outcomes = [(a.outcome, a.error_code) for a in final.attempt_log]
    assert outcomes == [("failed", "transcoder_lost"), ("done", None)], outcomes
    assert local.poll() is None
    time.sleep(1.0)  # nothing completes it a second time
    assert [a.outcome for a in client.get(job.id, with_attempts=True).attempt_log] == [
        "failed",
        "done",
    ]
    wait_for(lambda: not [w for w in cluster.live() if w.kind == "golivepeer"], what="unadvertised")


def test_least_loaded_transcoder_takes_the_next_segment(
    node: Node, cluster: Cluster, segment: bytes
) -> None:
    a, b = node.transcoder(capacity=2), node.transcoder(capacity=2)

    def both_in_flight(_: net_pb2.NotifySegment) -> bool:
        # Hold each task until both are pushed, so the second choice sees the first's load.
        wait_for(lambda: len(a.notified) + len(b.notified) >= 2, what="both segments pushed")
        return True

    a.on_notify = b.on_notify = both_in_flight
    a.start()
    b.start()
    wait_for(lambda: _golivepeer_live(cluster, 4), what="the bridge's advertisement")
    client = cluster.client()
    jobs = [client.submit(segment, LADDER, duration=1.0) for _ in range(2)]
    for job in jobs:
        assert _encoders(client, job.id) == {"golivepeer/h264"}
    assert (len(a.posted), len(b.posted)) == (1, 1)


def test_stalled_transcoder_is_dropped_after_the_timeout(
    node: Node, cluster: Cluster, segment: bytes
) -> None:
    t = node.attach(on_notify=lambda n: False)  # takes the segment, never answers
    client = cluster.client()
    job = client.submit(segment, LADDER, duration=1.0)
    wait_for(lambda: t.notified, what="the segment pushed to the transcoder")
    cluster.start_worker()
    # go-livepeer's max(8 s, 4 x duration) passes, the transcoder is dropped, the job retried.
    assert _encoders(client, job.id) == {"libx264"}
    outcomes = [(a.outcome, a.error_code) for a in client.get(job.id, True).attempt_log]
    assert outcomes == [("failed", "timeout"), ("done", None)], outcomes
    assert node.attached()["transcoders"] == []
    wait_for(lambda: t._thread is not None and not t._thread.is_alive(), what="stream ended")


def test_a_node_restart_mid_task_completes_the_job_without_local_workers(
    cluster: Cluster, segment: bytes
) -> None:
    # Only go-livepeer transcoders serve this cluster, so no local worker runs the
    # reconciler: the node does, once a transcoder is attached again.
    first = Node(cluster)
    try:
        held = first.attach(on_notify=lambda n: False)  # takes the segment, never answers
        client = cluster.client()
        job = client.submit(segment, LADDER, duration=1.0)
        wait_for(lambda: held.notified, what="the segment pushed to the transcoder")
        cluster.kill9(first.proc)
    finally:
        first.close()
    second = Node(cluster)
    try:
        second.attach()
        assert _encoders(client, job.id) == {"golivepeer/h264"}
        final = client.get(job.id, with_attempts=True)
        outcomes = [a.outcome for a in final.attempt_log]
        assert outcomes[-1] == "done" and outcomes.count("done") == 1, outcomes
        assert final.publishes == 2
        assert "reconciled without local workers" in cluster.logs()
        # Only the verified segment is paid for; the total survived the first node.
        pixels = client.wait(job.id).encoded_pixels
        assert second.attached()["totals"]["127.0.0.1"] | {"first_seen": 0, "last_seen": 0} == {
            "segments": 1,
            "pixels": pixels,
            "first_seen": 0,
            "last_seen": 0,
        }
        text = second.http.get("/metrics").text
        line = 'farm_transcoder_pixels{transcoder="golivepeer@127.0.0.1"} '
        assert float(text.split(line, 1)[1].split()[0]) == pixels
        # The dead node's list expired with it; the live node's is there.
        wait_for(
            lambda: (
                [t["node"] for t in _farm_transcoders(cluster)]
                == [w.worker for w in cluster.live() if w.kind == "golivepeer"]
            ),
            what="only the live node's transcoders listed",
        )
    finally:
        second.close()


def test_an_av1_rendition_is_never_sent_to_a_golivepeer_transcoder(
    node: Node, cluster: Cluster, segment: bytes
) -> None:
    # go-livepeer's protocol has no AV1: a ladder with an AV1 rendition (routed to the H.264
    # queue the bridge consumes) goes back for another worker instead of failing on the
    # transcoder; with no other worker it fails, saying why, after its attempts.
    t = node.attach()
    client = cluster.client()
    ladder = [
        VideoProfile("h264", 256, 144, 200_000, 30, 1, "", "", "H.264"),
        VideoProfile("av1", 256, 144, 200_000, 30, 1, "", "", "AV1"),
    ]
    job = client.submit(segment, ladder, duration=1.0)
    assert job.queue == "transcode.cpu.h264"
    with pytest.raises(JobFailedError):
        client.wait(job.id, timeout=60)
    failed = client.get(job.id, with_attempts=True)
    assert failed.error_code == "no_transcoder"
    assert "cannot encode AV1" in (failed.error or "")
    assert len(failed.attempt_log) == 3  # FARM_MAX_ATTEMPTS in the test cluster
    assert t.notified == [] and not t.errors
