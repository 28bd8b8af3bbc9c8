"""AI jobs through real services: the AI client, the broker, AI workers and HTTP runners
(``farm ai-runner`` processes and a scripted ai-runner for failures)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from farm.client import JobFailedError
from farm.errors import AIRequestInvalid, NoCapacity
from tests.farm.ai.helpers import ScriptedRunner, ai_runner, decode, picture, png, psnr, resize
from tests.farm.harness import Cluster, cluster_env, wait_for
from tests.farm.test_services import start_node

MODEL = "stabilityai/stable-diffusion-x4-upscaler"
UPSCALE = {"pipeline": "upscale", "model_id": MODEL}


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    c.env["FARM_AI_PROBE_S"] = "0.3"
    yield c
    c.stop()


@pytest.fixture
def scripted() -> Iterator[ScriptedRunner]:
    runner = ScriptedRunner().start()
    yield runner
    runner.stop()


def _ai_worker(cluster: Cluster, *models: dict[str, Any]) -> str:
    proc = cluster.start_worker("--ai-models", json.dumps(list(models)))
    caps = cluster.worker_of(proc)
    assert caps is not None
    return caps.worker


def _entry(cluster: Cluster, worker: str) -> dict[str, Any]:
    (caps,) = [w for w in cluster.live() if w.worker == worker]
    entry: dict[str, Any] = caps.ai_models[0]
    return entry


def test_upscale_end_to_end_through_an_http_runner(cluster: Cluster, tmp_path: Path) -> None:
    with ai_runner(tmp_path, token="tok") as (url, _):
        worker = _ai_worker(cluster, {**UPSCALE, "url": url, "token": "tok", "warm": True})
        entry = _entry(cluster, worker)
        assert entry["status"] == "up" and entry["warm"] and entry["capacity"] == 1
        assert entry["runner"] == "http" and "token" not in entry
        caps = next(w for w in cluster.live() if w.worker == worker)
        assert "ai.upscale" in caps.queues and f"ai.upscale@{worker}" in caps.queues
        assert not any(q.startswith("transcode.") for q in caps.queues)

        client = cluster.ai_client()
        source = picture(48, 36)
        job_id = client.submit(
            pipeline="upscale",
            model_id=MODEL,
            params={"prompt": "x", "seed": 9},
            files={"image": png(source)},
        )
        result = client.wait(job_id, timeout=60)
    assert result.worker == worker and result.pipeline == "upscale" and result.model_id == MODEL
    (image,) = result.response["images"]
    (media,) = result.media
    assert image["url"] == f"farm-blob:{media.key}" and image["seed"] == 9
    assert media.content_type == "image/png"
    data = client.media(image["url"])
    assert len(data) == media.size and client.media(media.key) == data
    out = decode(data)
    assert out.shape == (144, 192, 3)
    assert psnr(out, resize(source, 192, 144, "bicubic")) > 30
    job = client.get(job_id, with_attempts=True)
    assert job.kind == "ai" and job.state == "done" and job.queue == f"ai.upscale@{worker}"
    assert [a.outcome for a in job.attempt_log] == ["done"]
    assert "image" in job.spec["files"] and "image" not in job.spec["params"]


def test_llm_streams_through_the_client(cluster: Cluster) -> None:
    _ai_worker(
        cluster, {"pipeline": "llm", "model_id": "farm/echo", "runner": "process", "warm": True}
    )
    client = cluster.ai_client()
    messages = [{"role": "user", "content": "stream these five words please"}]
    params = {"messages": messages, "max_tokens": 64, "stream": True}
    job_id = client.submit(pipeline="llm", model_id="farm/echo", params=params)
    chunks = list(client.stream(job_id, timeout=60))
    words = [c["choices"][0]["delta"]["content"] for c in chunks]
    assert "".join(words) == "stream these five words please" and len(chunks) == 6
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    result = client.wait(job_id, timeout=10)
    assert result.response["choices"][0]["message"]["content"] == "stream these five words please"
    assert result.media == ()
    # A late reader still gets every chunk.
    assert list(client.stream(job_id, timeout=10)) == chunks
    plain = client.submit(pipeline="llm", model_id="farm/echo", params={"messages": messages})
    with pytest.raises(AIRequestInvalid, match="stream: true"):
        next(client.stream(plain))
    assert client.wait(plain, timeout=30).response["choices"][0]["finish_reason"] == "stop"


def test_warm_worker_before_cold(cluster: Cluster) -> None:
    cold = _ai_worker(cluster, {**UPSCALE, "warm": False})
    warm = _ai_worker(cluster, {**UPSCALE, "warm": True})
    client = cluster.ai_client()
    assert client.route("upscale", MODEL).workers == (warm, cold)
    for _ in range(3):
        job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
        assert client.wait(job_id, timeout=60).worker == warm
    status = httpx.get(f"{start_node(cluster)}/status", timeout=10).json()
    advertised = {w["name"]: w["ai_models"] for w in status["workers"]}
    assert advertised[warm][0]["warm"] and not advertised[cold][0]["warm"]
    assert advertised[cold][0]["status"] == "up" and advertised[cold][0]["runner"] == "builtin"


def test_job_moves_when_the_first_runner_fails(cluster: Cluster, scripted: ScriptedRunner) -> None:
    broken = _ai_worker(cluster, {**UPSCALE, "url": scripted.url, "warm": True})
    good = _ai_worker(cluster, {**UPSCALE, "warm": False})
    client = cluster.ai_client()
    job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
    result = client.wait(job_id, timeout=60)
    assert result.worker == good and scripted.requests == 1
    job = client.get(job_id, with_attempts=True)
    assert [(a.worker, a.outcome, a.error_code) for a in job.attempt_log] == [
        (broken, "failed", "runner_failed"),
        (good, "done", None),
    ]
    assert "Upscale pipeline error" in (job.attempt_log[0].error or "")


def test_runner_answering_error_is_down_and_skipped(
    cluster: Cluster, scripted: ScriptedRunner
) -> None:
    scripted.health = "ERROR"
    broken = _ai_worker(cluster, {**UPSCALE, "url": scripted.url, "warm": True})
    assert _entry(cluster, broken)["status"] == "down"
    client = cluster.ai_client()
    with pytest.raises(NoCapacity, match="down or full"):
        client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
    good = _ai_worker(cluster, {**UPSCALE, "warm": False})
    job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
    assert client.wait(job_id, timeout=60).worker == good
    assert scripted.requests == 0
    # The runner recovers: the worker advertises it up again and, warm, it is preferred.
    scripted.health, scripted.status = "OK", 200
    wait_for(lambda: _entry(cluster, broken)["status"] == "up", timeout=10, what="runner up")
    assert client.route("upscale", MODEL).workers[0] == broken


def test_none_left_fails_with_insufficient_capacity(
    cluster: Cluster, scripted: ScriptedRunner
) -> None:
    only = _ai_worker(cluster, {**UPSCALE, "url": scripted.url, "warm": True})
    client = cluster.ai_client()
    job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
    with pytest.raises(JobFailedError) as failed:
        client.wait(job_id, timeout=60)
    assert failed.value.code == "insufficient_capacity"
    assert only in str(failed.value) and "Upscale pipeline error" in str(failed.value)
    job = client.get(job_id, with_attempts=True)
    assert job.state == "failed" and len(job.attempt_log) == 1


def test_bad_request_fails_at_once_with_invalid_request(cluster: Cluster) -> None:
    _ai_worker(cluster, {**UPSCALE, "warm": True})
    _ai_worker(cluster, {**UPSCALE, "warm": False})
    client = cluster.ai_client()
    job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": b"not a picture" * 9})
    with pytest.raises(JobFailedError) as failed:
        client.wait(job_id, timeout=60)
    assert failed.value.code == "invalid_request"
    assert "could not be decoded" in str(failed.value)
    assert len(client.get(job_id, with_attempts=True).attempt_log) == 1


ECHO = {"pipeline": "llm", "model_id": "farm/echo"}
STREAM = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}


def test_runner_failing_mid_stream_surfaces_the_error(
    cluster: Cluster, scripted: ScriptedRunner
) -> None:
    chunk = {
        "id": "x",
        "model": "farm/echo",
        "created": 0,
        "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1},
        "choices": [
            {"index": 0, "finish_reason": "", "delta": {"role": "assistant", "content": "hi"}}
        ],
    }
    scripted.sse = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps({'error': 'GPU fell off'})}\n\n"
    _ai_worker(cluster, {**ECHO, "url": scripted.url, "warm": True})
    _ai_worker(cluster, {**ECHO, "warm": False})  # would serve it, but half the answer is out
    client = cluster.ai_client()
    job_id = client.submit("llm", "farm/echo", STREAM)
    stream = client.stream(job_id, timeout=60)
    assert next(stream) == chunk
    with pytest.raises(JobFailedError) as failed:
        next(stream)
    assert failed.value.code == "runner_failed" and "GPU fell off" in str(failed.value)
    assert scripted.requests == 1


def test_stream_of_a_job_with_no_capacity_left_ends_in_the_error(
    cluster: Cluster, scripted: ScriptedRunner
) -> None:
    _ai_worker(cluster, {**ECHO, "url": scripted.url, "warm": True})
    client = cluster.ai_client()
    job_id = client.submit("llm", "farm/echo", STREAM)
    with pytest.raises(JobFailedError) as failed:
        list(client.stream(job_id, timeout=60))
    assert failed.value.code == "insufficient_capacity"


def test_job_of_a_killed_worker_is_republished_to_another(
    cluster: Cluster, scripted: ScriptedRunner
) -> None:
    scripted.delay_s, scripted.status = 60.0, 200
    cluster.start_beat()
    doomed = cluster.start_worker(
        "--ai-models", json.dumps([{**UPSCALE, "url": scripted.url, "warm": True}])
    )
    client = cluster.ai_client()
    job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
    wait_for(lambda: scripted.requests == 1, timeout=30, what="the job on the slow runner")
    good = _ai_worker(cluster, {**UPSCALE, "warm": False})
    cluster.kill9(doomed)
    result = client.wait(job_id, timeout=60)
    assert result.worker == good
    job = client.get(job_id, with_attempts=True)
    assert job.publishes == 2 and [a.outcome for a in job.attempt_log] == ["lost", "done"]


def test_upscale_on_rabbitmq(
    tmp_path: Path, amqp_url: str, redis_url: str, sqlite_url: str
) -> None:
    env = cluster_env(tmp_path, amqp_url, sqlite_url, backend=redis_url, registry=redis_url)
    cluster = Cluster(tmp_path, env)
    try:
        worker = _ai_worker(cluster, {**UPSCALE, "warm": True})
        client = cluster.ai_client()
        job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
        result = client.wait(job_id, timeout=60)
        assert result.worker == worker
        assert decode(client.media(result.media[0].key)).shape == (192, 256, 3)
    finally:
        cluster.stop()
    # A stopped worker deletes its own (empty) queue; RabbitMQ would keep it forever.
    import kombu
    from amqp.exceptions import NotFound

    with kombu.Connection(amqp_url) as conn:
        with pytest.raises(NotFound):
            conn.default_channel.queue_declare(f"ai.upscale@{worker}", passive=True)
        assert conn.default_channel.queue_declare("ai.upscale", passive=True).queue == "ai.upscale"
