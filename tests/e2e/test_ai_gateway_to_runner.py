"""AI requests end to end: gateway -> orchestrator's queue -> AI worker -> HTTP runner.

Two orchestrator clusters (each on a Redis server of its own) with AI workers configured in
go-livepeer's -aiModels shape. Their runners are real HTTP servers: ``farm ai-runner``
processes doing real upscaling, and scripted ai-runners for a runner that is down (/health
ERROR), one that refuses the input (400) and an image-to-video runner.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.factories import mp4_clip, wav_audio
from tests.farm.ai.helpers import ScriptedRunner, ai_runner, decode, picture, png, psnr, resize
from tests.farm.harness import wait_for
from tests.gateway.conftest import Env, Gateway, orchestrators

MODEL = "stabilityai/stable-diffusion-x4-upscaler"
FLAKY = "test/flaky-upscaler"  # full on orch-a, served by a real runner on orch-b
DOWNED = "test/downed-upscaler"  # its runner on orch-a is down; built in on orch-b
WARM = "test/warm-upscaler"  # cold on orch-a, warm on orch-b (both built in)
PRICEY = "test/pricey-upscaler"  # orch-a asks more than the gateway's price for it
PICKY = "test/picky-upscaler"  # refuses its input on orch-a, would work on orch-b
I2V = "test/i2v"
TTS = "test/tts"
CHAT = {"role": "user", "content": "hello"}
SLOW = "test/slow-upscaler"  # slower on orch-a than the gateway waits; quick on orch-b
BROKEN_LLM = "test/broken-llm"  # fails after its first chunk
CHUNK = {
    "id": "x",
    "model": BROKEN_LLM,
    "created": 0,
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    "choices": [{"index": 0, "finish_reason": "", "delta": {"role": "assistant", "content": "hi"}}],
}


@dataclass
class World:
    env: Env
    gw: Gateway
    flaky_b: Any  # the farm ai-runner process serving FLAKY on orch-b
    picky_b: ScriptedRunner
    video: bytes
    speech: bytes


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("ai-e2e")
    video, small, speech = mp4_clip(), png(picture(8, 8)), wav_audio(0.5)
    scripted = {
        "down": ScriptedRunner(health="ERROR"),
        "full": ScriptedRunner(status=503, body={"detail": {"msg": "insufficient capacity"}}),
        "picky_a": ScriptedRunner(status=400, body={"detail": {"msg": "prompt is not allowed"}}),
        "picky_b": ScriptedRunner(status=200, body=_images("image/png", small)),
        "i2v": ScriptedRunner(status=200, body=_images("video/mp4", video)),
        "tts": ScriptedRunner(status=200, body={"audio": {"url": _data_url("audio/wav", speech)}}),
        "slow_a": ScriptedRunner(status=200, body=_images("image/png", small), delay_s=4.0),
        "quick_b": ScriptedRunner(status=200, body=_images("image/png", small)),
        "broken": ScriptedRunner(
            sse=f"data: {json.dumps(CHUNK)}\n\ndata: {json.dumps({'error': 'GPU fell off'})}\n\n"
        ),
    }
    with ExitStack() as stack:
        for runner in scripted.values():
            runner.start()
            stack.callback(runner.stop)
        real_a, _ = stack.enter_context(ai_runner(home))
        real_b, flaky_b = stack.enter_context(ai_runner(home, model_id=FLAKY))
        models_a = [
            {"pipeline": "upscale", "model_id": MODEL, "url": real_a, "warm": True},
            {"pipeline": "upscale", "model_id": FLAKY, "url": scripted["full"].url},
            {"pipeline": "upscale", "model_id": DOWNED, "url": scripted["down"].url},
            {"pipeline": "upscale", "model_id": WARM, "warm": False},
            {"pipeline": "upscale", "model_id": PRICEY, "warm": True, "price_per_unit": 11},
            {"pipeline": "upscale", "model_id": PICKY, "url": scripted["picky_a"].url},
            {"pipeline": "image-to-video", "model_id": I2V, "url": scripted["i2v"].url},
            {"pipeline": "text-to-speech", "model_id": TTS, "url": scripted["tts"].url},
            {"pipeline": "llm", "model_id": "farm/echo", "warm": True},
            {"pipeline": "llm", "model_id": BROKEN_LLM, "url": scripted["broken"].url},
            {"pipeline": "upscale", "model_id": SLOW, "url": scripted["slow_a"].url},
        ]
        models_b = [
            {"pipeline": "upscale", "model_id": FLAKY, "url": real_b},
            {"pipeline": "upscale", "model_id": PICKY, "url": scripted["picky_b"].url},
            {"pipeline": "upscale", "model_id": SLOW, "url": scripted["quick_b"].url},
            {"pipeline": "upscale", "model_id": DOWNED},
            {"pipeline": "upscale", "model_id": WARM, "warm": True},
            {"pipeline": "upscale", "model_id": PRICEY, "price_per_unit": 20, "pixels_per_unit": 2},
        ]
        env = stack.enter_context(
            orchestrators(
                home,
                [
                    ("orch-a", "eu", _workers(models_a)),
                    ("orch-b", "us", _workers(models_b)),
                ],
                private_redis=True,
            )
        )
        gw = env.gateway(
            FARM_AI_PRICE_PER_UNIT="1",
            FARM_AI_PRICES=json.dumps(
                [{"pipeline": "upscale", "model_id": PRICEY, "price_per_unit": 10}]
            ),
            FARM_RATE_BURST="1000",
            FARM_RATE_LIMIT_PER_MINUTE="60000",
            FARM_AI_RETRY_TIMEOUT_S="30",
            FARM_AI_JOB_TIMEOUT_S="60",
            FARM_SUSPEND_S="1",
        )
        yield World(env, gw, flaky_b, scripted["picky_b"], video, speech)


def _workers(models: list[dict[str, Any]]) -> dict[str, str]:
    return {"FARM_AI_MODELS": json.dumps(models), "FARM_AI_PROBE_S": "0.3"}


def _data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def _images(content_type: str, data: bytes) -> dict[str, object]:
    return {"images": [{"url": _data_url(content_type, data), "seed": 1, "nsfw": False}]}


def _key(gw: Gateway) -> tuple[str, dict[str, str]]:
    """A fresh key, once the orchestrators are idle (see :func:`_idle`)."""
    _idle(gw)
    return _key_now(gw)


def _key_now(gw: Gateway) -> tuple[str, dict[str, str]]:
    key_id, key = gw.key(credits=10**9)
    return key_id, {"Authorization": f"Bearer {key}"}


def _attempts(gw: Gateway, key_id: str) -> list[tuple[str, str, str | None]]:
    """The tries of the key's one AI request (each test uses a key of its own)."""
    (session_id,) = [
        s["id"] for s in gw.admin("GET", "/admin/sessions").json() if s["key_id"] == key_id
    ]
    session = gw.admin("GET", f"/admin/sessions/{session_id}").json()
    return [(a["orchestrator"], a["outcome"], a["error_code"]) for a in session["attempts"]]


def _upscale(gw: Gateway, auth: dict[str, str], image: bytes, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/upscale",
        headers=auth,
        data={"prompt": "sharper", **fields},
        files={"image": ("in.png", image, "image/png")},
        timeout=120,
    )


def test_upscale_end_to_end_through_gateway_queue_worker_and_http_runner(
    world: World,
) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    source = picture(48, 36)
    r = _upscale(gw, auth, png(source), seed="7")
    assert r.status_code == 200, r.text
    (image,) = r.json()["images"]
    assert image["seed"] == 7 and image["nsfw"] is False
    assert image["url"].startswith("/ai/media/") and image["url"].endswith(".png")
    media = httpx.get(gw.url + image["url"], timeout=30)
    assert media.status_code == 200 and media.headers["content-type"] == "image/png"
    out = decode(media.content)
    assert out.shape == (144, 192, 3)  # x4, resampled for real
    assert psnr(out, resize(source, 192, 144, "bicubic")) > 30
    # Charged the input's W x H at the global price, once, on the orchestrator that ran it.
    assert int(r.headers["livepeer-charged"]) == 48 * 36
    assert gw.balance(key_id) == 10**9 - 48 * 36
    assert _attempts(gw, key_id) == [("orch-a", "done", None)]


def _idle(gw: Gateway) -> None:
    """Wait until the gateway's probes see every orchestrator idle, so that orch-a, in the
    gateway's region, is tried first."""

    def idle() -> bool:
        pool = gw.admin("GET", "/admin/orchestrators").json()
        return all(o["healthy"] and o["load"] == 0 for o in pool)

    wait_for(idle, timeout=30, what="idle orchestrators")


def _best(gw: Gateway) -> str:
    """The orchestrator the gateway's pool ranks first now."""
    pool = gw.admin("GET", "/admin/orchestrators").json()
    return str(max(pool, key=lambda o: (o["healthy"] and not o["suspended"], o["score"]))["name"])


def test_a_full_runner_moves_the_job_to_another_orchestrator(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    # orch-a is tried first once the probes see it idle (a job of an earlier test may still
    # be finishing there, and its load counts against it).
    wait_for(lambda: _best(gw) == "orch-a", timeout=30, what="orch-a to rank first again")
    r = _upscale(gw, auth, png(picture(20, 10)), model_id=FLAKY)
    assert r.status_code == 200, r.text
    assert httpx.get(gw.url + r.json()["images"][0]["url"], timeout=30).status_code == 200
    # orch-a's only runner for the model is full: no capacity there, not a failure.
    assert _attempts(gw, key_id) == [
        ("orch-a", "failed", "insufficient_capacity"),
        ("orch-b", "done", None),
    ]
    pool = {o["name"]: o for o in gw.admin("GET", "/admin/orchestrators").json()}
    assert not pool["orch-a"]["suspended"]
    assert gw.balance(key_id) == 10**9 - 20 * 10


def test_a_down_runner_sends_the_job_elsewhere(world: World) -> None:
    # orch-a's runner answers /health ERROR: its worker advertises the model down, and the
    # gateway goes to orch-b first, although orch-a is in its region.
    gw = world.gw
    key_id, auth = _key(gw)
    wait_for(
        lambda: (
            _models(gw, "orch-a").get(DOWNED) is None
            and _models(gw, "orch-b").get(DOWNED) is not None
        ),
        timeout=30,
        what="the probes to see orch-a's runner down",
    )
    r = _upscale(gw, auth, png(picture(20, 10)), model_id=DOWNED)
    assert r.status_code == 200, r.text
    assert _attempts(gw, key_id) == [("orch-b", "done", None)]


def test_warm_orchestrators_before_cold(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    assert _models(gw, "orch-a")[WARM] is False and _models(gw, "orch-b")[WARM] is True
    r = _upscale(gw, auth, png(picture(20, 10)), model_id=WARM)
    assert r.status_code == 200, r.text
    assert _attempts(gw, key_id) == [("orch-b", "done", None)]


def test_orchestrators_asking_more_than_the_gateways_price_are_left_out(world: World) -> None:
    # The gateway's price for the model is 10 per unit: orch-a asks 11, orch-b 20/2 = 10.
    gw = world.gw
    key_id, auth = _key(gw)
    r = _upscale(gw, auth, png(picture(20, 10)), model_id=PRICEY)
    assert r.status_code == 200, r.text
    assert _attempts(gw, key_id) == [("orch-b", "done", None)]
    assert r.headers["livepeer-charged"] == str(20 * 10 * 10)


def _models(gw: Gateway, name: str) -> dict[str, bool]:
    """The upscale models the gateway's last probe saw on orchestrator ``name``, and warm."""
    (o,) = [o for o in gw.admin("GET", "/admin/orchestrators").json() if o["name"] == name]
    return {m["model_id"]: m["warm"] for m in o["ai_models"] if m["pipeline"] == "upscale"}


def test_a_refused_input_is_400_and_not_retried(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    r = _upscale(gw, auth, png(picture(16, 16)), model_id=PICKY)
    assert r.status_code == 400, r.text
    assert "prompt is not allowed" in r.json()["error"]["message"]
    assert world.picky_b.requests == 0
    assert [a[:2] for a in _attempts(gw, key_id)] == [("orch-a", "failed")]
    assert gw.balance(key_id) == 10**9


def test_llm_streams_server_sent_events(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    body = {
        "model": "farm/echo",
        "messages": [{**CHAT, "content": "say these four words"}],
        "stream": True,
        "max_tokens": 32,
    }
    with httpx.stream("POST", f"{gw.url}/llm", headers=auth, json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), raw
    chunks = [json.loads(e[len("data: ") :]) for e in events]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "say these four words"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(not c["choices"][0].get("finish_reason") for c in chunks[:-1])
    assert gw.balance(key_id) == 10**9 - 32  # max_tokens
    _idle(gw)  # the echo model takes one job at a time: a busy one is no capacity, 503
    r = httpx.post(f"{gw.url}/llm", headers=auth, json={**body, "stream": False}, timeout=60)
    assert r.status_code == 200
    answer = r.json()
    assert answer["choices"][0]["message"]["content"] == "say these four words"
    assert {"id", "model", "created", "usage", "choices"} <= set(answer)


def test_image_to_video_async_then_result(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    r = httpx.post(
        f"{gw.url}/image-to-video",
        headers={**auth, "Prefer": "respond-async"},
        data={"model_id": I2V, "height": "64", "width": "96"},
        files={"image": ("in.png", png(picture(16, 16)), "image/png")},
        timeout=60,
    )
    assert r.status_code == 202, r.text
    request_id = r.json()["request_id"]
    deadline = time.monotonic() + 60
    while True:
        r = httpx.post(f"{gw.url}/image-to-video/result", json={"request_id": request_id})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert r.json() == {"status": "processing"}
        time.sleep(0.2)
    assert r.status_code == 200 and r.json()["status"] == "complete", r.text
    (video,) = r.json()["result"]["images"]
    assert video["url"].endswith(".mp4")
    media = httpx.get(gw.url + video["url"], timeout=30)
    assert media.headers["content-type"] == "video/mp4" and media.content == world.video
    assert gw.balance(key_id) == 10**9 - 64 * 96 * 25


def test_text_to_speech_audio_is_rehosted_and_priced_per_character(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    r = httpx.post(
        f"{gw.url}/text-to-speech",
        headers=auth,
        json={"model_id": TTS, "text": "¡hola, señor!"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    url = r.json()["audio"]["url"]
    assert url.startswith("/ai/media/") and url.endswith(".wav")
    audio = httpx.get(gw.url + url, timeout=30)
    assert audio.headers["content-type"] == "audio/wav" and audio.content == world.speech
    assert gw.balance(key_id) == 10**9 - 1000 * len("¡hola, señor!")  # 13 characters


def test_a_runner_failing_mid_stream_ends_the_events_with_an_error(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    body = {"model": BROKEN_LLM, "messages": [CHAT], "stream": True, "max_tokens": 8}
    with httpx.stream("POST", f"{gw.url}/llm", headers=auth, json=body, timeout=60) as r:
        assert r.status_code == 200
        raw = r.read().decode()
    assert raw == (
        f"data: {json.dumps(CHUNK)}\n\n"
        'data: {"error": {"message": "Internal Server Error"}}\n\n'
    )
    assert gw.balance(key_id) == 10**9  # an answer cut short is not charged


def test_an_orchestrator_that_fails_otherwise_is_suspended(world: World) -> None:
    # A gateway that waits 1.5 s for a job: orch-a's runner takes 4 s.
    gw = world.env.gateway(FARM_AI_JOB_TIMEOUT_S="1.5", FARM_SUSPEND_S="60")
    key_id, auth = _key(gw)
    r = _upscale(gw, auth, png(picture(12, 12)), model_id=SLOW)
    assert r.status_code == 200, r.text
    assert _attempts(gw, key_id) == [
        ("orch-a", "failed", "wait_timeout"),
        ("orch-b", "done", None),
    ]
    pool = {o["name"]: o for o in gw.admin("GET", "/admin/orchestrators").json()}
    assert pool["orch-a"]["suspended"] and not pool["orch-b"]["suspended"]
    # While orch-a is suspended, its own models are out of reach: orch-b has no echo model.
    _, auth = _key_now(gw)
    chat = {"model": "farm/echo", "messages": [CHAT], "stream": False, "max_tokens": 8}
    r = httpx.post(f"{gw.url}/llm", headers=auth, json=chat, timeout=60)
    assert r.status_code == 503


def test_no_runner_left_is_503(world: World) -> None:
    gw = world.gw
    key_id, auth = _key(gw)
    world.flaky_b.terminate()
    world.flaky_b.wait(timeout=10)
    r = _upscale(gw, auth, png(picture(20, 10)), model_id=FLAKY)
    assert r.status_code == 503, r.text
    assert r.json() == {"error": {"message": "Service Unavailable Error"}}
    assert [a[0] for a in _attempts(gw, key_id)] == ["orch-a", "orch-b"]
    assert gw.balance(key_id) == 10**9
