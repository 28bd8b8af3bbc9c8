"""The HTTP runner client and the worker's runner pool against real servers: requests,
streaming, health probes (down after failures or ERROR, LOADING past its limit), capacity,
and restarting a runner process the worker started."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.ai.config import parse_ai_models
from farm.ai.health import DOWN, LOADING, UP, Health
from farm.ai.http_runner import HttpRunner
from farm.ai.pool import RunnerPool
from farm.errors import AIRequestInvalid, InsufficientCapacity, RunnerFailed
from farm.settings import WorkerSettings
from tests.farm.ai.helpers import ScriptedRunner, ai_runner, decode, picture, png
from tests.farm.harness import wait_for

MODEL = "stabilityai/stable-diffusion-x4-upscaler"


def _pool(models: str, **settings: Any) -> RunnerPool:
    return RunnerPool(parse_ai_models(models), WorkerSettings(**settings))


def _http_model(url: str, **extra: Any) -> str:
    import json

    return json.dumps([{"pipeline": "upscale", "model_id": MODEL, "url": url, **extra}])


@pytest.fixture
def scripted() -> Iterator[ScriptedRunner]:
    runner = ScriptedRunner().start()
    yield runner
    runner.stop()


def test_http_runner_calls_a_real_ai_runner(tmp_path: Path) -> None:
    with ai_runner(tmp_path, token="t0k") as (url, _):
        client = HttpRunner(url, "upscale", MODEL, token="t0k")
        response = client.run({"prompt": "x", "seed": 5}, {"image": png(picture(40, 30))})
        image = response["images"][0]
        assert image["seed"] == 5
        assert decode(base64.b64decode(image["url"].split(",", 1)[1])).shape == (120, 160, 3)
        assert client.health() == ("OK", "")
        with pytest.raises(AIRequestInvalid, match="could not be decoded"):
            client.run({"prompt": "x"}, {"image": b"garbage" * 30})
        with pytest.raises(AIRequestInvalid, match="prompt"):
            client.run({}, {"image": png(picture(8, 8))})  # the runner's 422
        client.close()
        wrong = HttpRunner(url, "upscale", MODEL, token="nope")
        with pytest.raises(RunnerFailed, match="refused the configured token"):
            wrong.run({"prompt": "x"}, {"image": png(picture(8, 8))})
        wrong.close()
        other = HttpRunner(url, "upscale", "other/model", token="t0k")
        with pytest.raises(AIRequestInvalid, match="called with other/model"):
            other.run({"prompt": "x"}, {"image": png(picture(8, 8))})
        other.close()


def test_http_runner_streams_llm_chunks(tmp_path: Path) -> None:
    with ai_runner(tmp_path, "llm") as (url, _):
        client = HttpRunner(url, "llm", "farm/echo")
        seen: list[dict[str, Any]] = []
        params = {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 10}
        whole = client.run(params, {}, seen.append)
        assert [c["choices"][0]["delta"]["content"] for c in seen] == ["a", " b", " c", ""]
        assert whole["choices"][0]["message"]["content"] == "a b c"
        assert client.run(params, {})["choices"][0]["message"]["content"] == "a b c"
        client.close()


def test_unreachable_runner_is_a_runner_failure() -> None:
    from tests.farm.harness import free_port

    client = HttpRunner(f"http://127.0.0.1:{free_port()}", "upscale", MODEL, timeout_s=2)
    with pytest.raises(RunnerFailed, match="unreachable"):
        client.run({"prompt": "x"}, {"image": b"x"})
    status, why = client.health()
    assert status is None and "failed" in why


def test_health_rules() -> None:
    h = Health(loading_timeout_s=10)
    assert h.observe("LOADING", 0.0) == LOADING
    assert h.observe("OK", 1.0) == UP
    assert h.observe(None, 2.0, "refused") == UP  # one failure is not enough
    assert h.observe(None, 3.0, "refused") == DOWN and h.last == "refused"
    assert h.observe("IDLE", 4.0) == UP and h.failures == 0
    assert h.observe("ERROR", 5.0) == DOWN
    h.reset(6.0)
    assert h.observe("LOADING", 7.0) == LOADING
    assert h.observe("LOADING", 16.0) == LOADING  # 10 s since the start: at the limit
    assert h.observe("LOADING", 16.5) == LOADING  # past it: a first failure
    assert h.failures == 1
    assert h.observe("LOADING", 17.0) == DOWN and "LOADING for more than" in h.last


def test_pool_marks_a_runner_down_when_it_goes_away(tmp_path: Path) -> None:
    with ai_runner(tmp_path) as (url, proc):
        pool = _pool(_http_model(url, warm=True), ai_probe_s=60)
        pool.start()
        runner = pool.acquire("upscale", MODEL)
        pool.release(runner)
        assert pool.advertise()[0]["status"] == UP
        proc.terminate()
        proc.wait(timeout=10)
        pool.probe_once()
        assert pool.advertise()[0]["status"] == UP
        pool.probe_once()
        entry = pool.advertise()[0]
        assert entry["status"] == DOWN and "failed" in entry["health"]
        with pytest.raises(InsufficientCapacity, match="runner is down"):
            pool.acquire("upscale", MODEL)
        pool.close()


def test_pool_marks_an_error_runner_down_and_back_up(scripted: ScriptedRunner) -> None:
    pool = _pool(_http_model(scripted.url), ai_probe_s=0.1)
    pool.start()
    assert pool.advertise()[0]["status"] == UP
    scripted.health = "ERROR"
    wait_for(lambda: pool.advertise()[0]["status"] == DOWN, timeout=5, what="down")
    assert pool.advertise()[0]["health"] == "ERROR"
    scripted.health = "IDLE"
    wait_for(lambda: pool.advertise()[0]["status"] == UP, timeout=5, what="up again")
    pool.close()


def test_pool_loading_too_long_counts_as_failure(scripted: ScriptedRunner) -> None:
    scripted.health = "LOADING"
    pool = _pool(_http_model(scripted.url), ai_probe_s=60, ai_loading_timeout_s=0.3)
    pool.start()
    assert pool.advertise()[0]["status"] == LOADING
    with pytest.raises(InsufficientCapacity, match="loading"):
        pool.acquire("upscale", MODEL)
    time.sleep(0.4)
    pool.probe_once()
    pool.probe_once()
    assert pool.advertise()[0]["status"] == DOWN
    pool.close()


def test_failed_requests_count_against_health(scripted: ScriptedRunner) -> None:
    pool = _pool(_http_model(scripted.url, capacity=2), ai_probe_s=60)
    pool.start()
    for _ in range(2):
        runner = pool.acquire("upscale", MODEL)
        with pytest.raises(RunnerFailed, match="answered 500: Upscale pipeline error"):
            runner.run({"prompt": "x"}, {"image": b"x"}, None)
        pool.release(runner)
    assert scripted.requests == 2
    assert pool.advertise()[0]["status"] == DOWN
    pool.close()


def test_capacity_slots() -> None:
    pool = _pool(f'[{{"pipeline": "upscale", "model_id": "{MODEL}", "capacity": 2}}]')
    pool.start()
    a = pool.acquire("upscale", MODEL)
    b = pool.acquire("upscale", MODEL)
    assert pool.advertise()[0]["load"] == 2
    with pytest.raises(InsufficientCapacity, match="full"):
        pool.acquire("upscale", MODEL)
    pool.release(a)
    pool.release(b)
    with pytest.raises(InsufficientCapacity, match="does not serve"):
        pool.acquire("upscale", "other/model")
    pool.close()


def test_runner_process_is_restarted_when_it_dies() -> None:
    models = f'[{{"pipeline": "upscale", "model_id": "{MODEL}", "runner": "process"}}]'
    pool = _pool(models, ai_probe_s=0.2)
    pool.start()
    entry = pool.advertise()[0]
    assert entry["status"] in ("cold", "loading") and entry["runner_pid"] is None
    assert entry["warm"] is False
    # A cold runner process starts with its first job.
    runner = pool.acquire("upscale", MODEL)
    out = runner.run({"prompt": "x"}, {"image": png(picture(16, 12))}, None)
    pool.release(runner)
    assert decode(base64.b64decode(out["images"][0]["url"].split(",", 1)[1])).shape[:2] == (48, 64)
    first = pool.advertise()[0]
    assert first["status"] == UP and first["warm"] is True and first["runner_pid"]
    os.kill(first["runner_pid"], signal.SIGKILL)
    wait_for(lambda: pool.advertise()[0]["restarts"] == 1, timeout=10, what="the runner restarted")
    wait_for(lambda: pool.advertise()[0]["status"] == UP, timeout=30, what="restarted runner up")
    again = pool.advertise()[0]
    assert again["runner_pid"] != first["runner_pid"]
    runner = pool.acquire("upscale", MODEL)
    assert runner.run({"prompt": "x"}, {"image": png(picture(16, 12))}, None)["images"]
    pool.release(runner)
    pool.close()


def test_two_first_jobs_start_one_runner_process() -> None:
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    models = (
        f'[{{"pipeline": "upscale", "model_id": "{MODEL}", "runner": "process", "capacity": 2}}]'
    )
    pool = _pool(models, ai_probe_s=60)
    pool.start()
    with ThreadPoolExecutor(2) as ex:
        runners = list(ex.map(lambda _: pool.acquire("upscale", MODEL), range(2)))
    assert runners[0] is runners[1] and pool.advertise()[0]["load"] == 2
    children = [p for p in psutil.Process().children() if "ai-runner" in " ".join(p.cmdline())]
    assert [p.pid for p in children] == [pool.advertise()[0]["runner_pid"]]
    for r in runners:
        pool.release(r)
    pool.close()
    assert not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE


def test_request_bodies_as_ai_runner_takes_them(scripted: ScriptedRunner) -> None:
    scripted.status, scripted.body = 200, {"images": []}
    client = HttpRunner(scripted.url, "image-to-image", "stabilityai/sdxl-turbo", token="tk")
    client.run({"prompt": "cat", "strength": 0.5, "safety_check": False}, {"image": b"PNGDATA"})
    assert scripted.last is not None
    path, headers, body = scripted.last
    assert path == "/image-to-image" and headers["Authorization"] == "Bearer tk"
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    text = body.decode()
    for name, value in [("prompt", "cat"), ("strength", "0.5"), ("safety_check", "false")]:
        assert f'name="{name}"\r\n\r\n{value}\r\n' in text
    assert 'name="model_id"\r\n\r\nstabilityai/sdxl-turbo\r\n' in text
    assert 'name="image"; filename="image"' in text and "PNGDATA" in text
    client.close()
    json_client = HttpRunner(scripted.url, "text-to-image", "stabilityai/sdxl-turbo")
    json_client.run({"prompt": "cat", "width": 512}, {})
    path, headers, body = scripted.last
    assert path == "/text-to-image" and headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers
    import json

    assert json.loads(body) == {"prompt": "cat", "width": 512, "model_id": "stabilityai/sdxl-turbo"}
    json_client.close()
