"""The AI routes at a gateway process: validation, error bodies, auth, credit and prices.

No orchestrator is configured here, so a valid request ends in go-livepeer's 503 after its
credit was held and given back; with no credit, the 402 says what the job would cost, which
checks each pipeline's units and price lookup through the real route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.factories import still_image, wav_audio
from tests.gateway.conftest import Env, Gateway, orchestrators, webhook_server

PRICES = json.dumps(
    {
        "capabilities_prices": [
            {"pipeline": "text-to-image", "model_id": "cheap/model", "price_per_unit": 1},
            {"pipeline": "text-to-image", "model_id": "default", "price_per_unit": 3},
            {"pipeline": "upscale", "model_id": "default", "price_per_unit": 2},
        ]
    }
)
CHAT = {"role": "user", "content": "hello"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with orchestrators(tmp_path_factory.mktemp("ai-routes"), []) as e:
        yield e


@pytest.fixture(scope="module")
def gw(env: Env) -> Gateway:
    return env.gateway(
        expect_unhealthy=True,
        FARM_AI_PRICES=PRICES,
        FARM_AI_PRICE_PER_UNIT="5",
        FARM_RATE_BURST="1000",
        FARM_RATE_LIMIT_PER_MINUTE="60000",
    )


@pytest.fixture(scope="module")
def rich(gw: Gateway) -> tuple[str, dict[str, str]]:
    key_id, key = gw.key(credits=10**12)
    return key_id, {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def broke(gw: Gateway) -> dict[str, str]:
    _, key = gw.key(credits=0)
    return {"Authorization": f"Bearer {key}"}


def post(gw: Gateway, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", headers=headers, timeout=30, **kwargs)


def error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message"}, body
    return str(body["error"]["message"])


def test_no_key_is_401_in_the_ai_error_body(gw: Gateway) -> None:
    r = post(gw, "/text-to-image", {}, json={"prompt": "x"})
    assert r.status_code == 401
    assert "API key" in error(r)
    r = post(gw, "/llm", {"Authorization": "Bearer nope"}, json={})
    assert r.status_code == 401 and error(r) == "invalid API key"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/text-to-image", {}, "prompt: Field required"),
        ("/text-to-image", {"prompt": 5}, "prompt: Input should be a valid string"),
        ("/text-to-image", {"prompt": "x", "height": "512"}, "height: Input should be"),
        ("/text-to-image", {"prompt": "x", "width": -4}, "width: Input should be greater"),
        ("/text-to-image", {"prompt": "x", "safety_check": "yes"}, "safety_check: Input"),
        ("/text-to-speech", {"description": "calm"}, "text: Field required"),
        ("/text-to-speech", {"text": ""}, "text: String should have at least 1 character"),
        ("/llm", {"messages": [CHAT], "stream": False, "max_tokens": 5}, "missing required"),
        ("/llm", {"model": "", "stream": False, "max_tokens": 5}, "missing required fields"),
        ("/llm", {"model": "", "messages": [CHAT], "max_tokens": 5}, "missing required fields"),
        ("/llm", {"model": "", "messages": [CHAT], "stream": False}, "missing required fields"),
        (
            "/llm",
            {"model": "", "messages": [{"role": "user"}], "stream": False, "max_tokens": 5},
            "messages.0.content: Field required",
        ),
        (
            "/llm",
            {"model": "", "messages": [CHAT], "stream": "no", "max_tokens": 5},
            "stream: Input should be a valid boolean",
        ),
        (
            "/llm",
            {"model": "", "messages": [CHAT], "stream": False, "max_tokens": 0},
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            "/llm",
            {"model": "", "messages": [CHAT], "stream": False, "max_tokens": 5, "top_p": 0},
            "top_p: Input should be greater than 0",
        ),
        (
            "/llm",
            {"model": "", "messages": [CHAT], "stream": False, "max_tokens": 5, "temperature": -1},
            "temperature: Input should be greater than or equal to 0",
        ),
    ],
)
def test_json_routes_refuse_missing_and_mistyped_fields(
    gw: Gateway, rich: tuple[str, dict[str, str]], path: str, body: object, message: str
) -> None:
    r = post(gw, path, rich[1], json=body)
    assert r.status_code == 400, r.text
    assert message in error(r)


def test_json_routes_refuse_bodies_that_are_not_a_json_object(
    gw: Gateway, rich: tuple[str, dict[str, str]]
) -> None:
    r = post(gw, "/text-to-image", rich[1], content=b"{not json")
    assert r.status_code == 400 and "the body must be a JSON object: " in error(r)
    r = post(gw, "/llm", rich[1], json=[1, 2])
    assert r.status_code == 400 and error(r) == "the body must be a JSON object"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/text-to-image", b'{"prompt": "x", "guidance_scale": NaN}', "NaN is not a JSON value"),
        ("/llm", b'{"model": "", "temperature": Infinity}', "Infinity is not a JSON value"),
        ("/text-to-image", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("/text-to-image", b'{"prompt": "x", "model_id": "a\\u0000"}', "model_id: String should"),
        ("/text-to-image", b'{"prompt": "x", "model_id": "' + b"m" * 300 + b'"}', "model_id"),
        (
            "/llm",
            b'{"model": "a\\u0000", "messages": [{"role": "user", "content": "x"}], '
            b'"stream": false, "max_tokens": 5}',
            "model: String should match pattern",
        ),
    ],
)
def test_json_routes_refuse_what_go_would_not_decode_or_the_log_cannot_hold(
    gw: Gateway, rich: tuple[str, dict[str, str]], path: str, body: bytes, message: str
) -> None:
    key_id, auth = rich
    before = gw.balance(key_id)
    r = post(gw, path, {**auth, "Content-Type": "application/json"}, content=body)
    assert r.status_code == 400, r.text
    assert message in error(r)
    assert gw.balance(key_id) == before


def test_a_job_no_balance_can_cover_is_402(gw: Gateway, rich: tuple[str, dict[str, str]]) -> None:
    # 5 credits a token: more than a key's BIGINT balance could ever hold.
    body = {"model": "", "messages": [CHAT], "stream": False, "max_tokens": 2**62}
    r = post(gw, "/llm", rich[1], json=body)
    assert r.status_code == 402, r.text
    assert error(r).startswith(f"insufficient credit: the job needs {5 * 2**62} ")


@pytest.mark.parametrize(
    ("path", "data", "files", "message"),
    [
        ("/upscale", {"prompt": "x"}, None, "image: Field required"),
        ("/upscale", {}, "image", "prompt: Field required"),
        ("/image-to-image", {"prompt": "x", "strength": "strong"}, "image", "strength: Input"),
        ("/image-to-video", {"fps": "6.5"}, "image", "fps: Input should be a valid integer"),
        ("/segment-anything-2", {"box": "[1, 2"}, "image", "box: Value error, must be a JSON"),
        ("/segment-anything-2", {"multimask_output": "maybe"}, "image", "multimask_output"),
        ("/audio-to-text", {"metadata": "[]"}, "audio", "metadata: Value error, must be"),
        ("/audio-to-text", {}, None, "audio: Field required"),
        ("/image-to-text", {}, "garbage", "image: not a decodable image"),
        ("/audio-to-text", {}, "garbage-audio", "audio: not"),
        ("/upscale", {"prompt": "x"}, "empty", "image: the file is empty"),
        ("/upscale", {"prompt": "x", "image": "a string"}, None, "image: must be a file upload"),
        ("/upscale", {"prompt": "x"}, "two-files", "seed: must be a text field, not a file"),
        ("/image-to-image", {"prompt": "x", "strength": "inf"}, "image", "strength: Input sh"),
        ("/image-to-video", {"noise_aug_strength": "nan"}, "image", "should be a finite number"),
        ("/segment-anything-2", {"box": "[NaN]"}, "image", "box: Value error, must be a JSON"),
        ("/segment-anything-2", {"box": "[" * 3000 + "]" * 3000}, "image", "nested too deeply"),
        ("/audio-to-text", {"metadata": '{"a": NaN}'}, "audio", "NaN is not a JSON value"),
    ],
)
def test_multipart_routes_refuse_missing_mistyped_and_unreadable_fields(
    gw: Gateway,
    rich: tuple[str, dict[str, str]],
    path: str,
    data: dict[str, str],
    files: str | None,
    message: str,
) -> None:
    png = still_image(32, 24)
    uploads: dict[str, tuple[str, bytes, str]] = {
        "image": {"image": ("a.png", png, "image/png")},
        "audio": {"audio": ("a.wav", wav_audio(0.5), "audio/wav")},
        "garbage": {"image": ("a.png", b"\x89PNG not really" * 20, "image/png")},
        "garbage-audio": {"audio": ("a.wav", b"RIFF nonsense" * 20, "audio/wav")},
        "empty": {"image": ("a.png", b"", "image/png")},
        "two-files": {
            "image": ("a.png", png, "image/png"),
            "seed": ("b.png", png, "image/png"),
        },
    }.get(files or "", {})  # type: ignore[assignment]
    # httpx sends multipart only when there is a file; a form without one goes as multipart
    # through an explicit boundary so the route sees multipart/form-data either way.
    if uploads:
        r = post(gw, path, rich[1], data=data, files=uploads)
    else:
        body, content_type = _form_only(data)
        r = post(gw, path, {**rich[1], "Content-Type": content_type}, content=body)
    assert r.status_code == 400, r.text
    assert message in error(r)


def _form_only(data: dict[str, str]) -> tuple[bytes, str]:
    boundary = "xXxAIxXx"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in data.items()
    ]
    body = "".join(parts) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


def test_multipart_routes_refuse_json(gw: Gateway, rich: tuple[str, dict[str, str]]) -> None:
    r = post(gw, "/upscale", rich[1], json={"prompt": "x"})
    assert r.status_code == 400
    assert error(r) == "request Content-Type isn't multipart/form-data"


def test_audio_over_50_mb_is_413(gw: Gateway, rich: tuple[str, dict[str, str]]) -> None:
    big = b"\0" * (50 * 1024 * 1024 + 1)
    r = post(gw, "/audio-to-text", rich[1], files={"audio": ("a.wav", big, "audio/wav")})
    assert r.status_code == 413
    assert error(r) == "audio file too large; max file size is 50MB"

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while streaming
        body, _ = _form_only({"model_id": ""})
        yield body[: -len(b"--xXxAIxXx--\r\n")]
        yield b'--xXxAIxXx\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
        yield b"Content-Type: audio/wav\r\n\r\n"
        for _ in range(52):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--xXxAIxXx--\r\n"

    _, content_type = _form_only({})
    r = post(gw, "/audio-to-text", {**rich[1], "Content-Type": content_type}, content=chunks())
    assert r.status_code == 413
    assert "max file size is 50MB" in error(r)


def test_valid_requests_without_orchestrators_are_503_and_cost_nothing(
    gw: Gateway, rich: tuple[str, dict[str, str]]
) -> None:
    key_id, auth = rich
    before = gw.balance(key_id)
    r = post(gw, "/text-to-image", auth, json={"prompt": "a cat"})
    assert r.status_code == 503
    assert error(r) == "Service Unavailable Error"
    assert r.headers["retry-after"]
    r = post(
        gw,
        "/llm",
        auth,
        json={"model": "", "messages": [CHAT], "stream": True, "max_tokens": 8},
    )
    assert r.status_code == 503 and error(r) == "Service Unavailable Error"
    png = {"image": ("a.png", still_image(16, 16), "image/png")}
    r = post(gw, "/image-to-video", {**auth, "Prefer": "respond-async"}, files=png)
    assert r.status_code == 202
    request_id = r.json()["request_id"]
    for _ in range(100):
        r = post(gw, "/image-to-video/result", {}, json={"request_id": request_id})
        if r.status_code == 200:
            break
        assert r.status_code == 202 and r.json() == {"status": "processing"}
    assert r.json() == {
        "status": "complete",
        "result": {"error": {"message": "Service Unavailable Error"}},
    }
    assert gw.balance(key_id) == before


def test_image_to_video_result_needs_a_known_request_id(gw: Gateway) -> None:
    for body in ({"request_id": "0" * 32}, {"request_id": "../x"}, {}):
        r = post(gw, "/image-to-video/result", {}, json=body)
        assert r.status_code == 400 and error(r) == "invalid request ID"
    r = httpx.get(f"{gw.url}/ai/media/{'0' * 32}/0.png", timeout=10)
    assert r.status_code == 404 and error(r) == "no such media"


def _needs(r: httpx.Response) -> int:
    assert r.status_code == 402, r.text
    message = error(r)
    return int(message.split("the job needs ")[1].split(" ")[0])


def test_402_states_the_price_in_livepeer_units(gw: Gateway, broke: dict[str, str]) -> None:
    # text-to-image: the model's price, then the pipeline's default, 512 x 512 when unset.
    t2i = {"prompt": "x", "model_id": "cheap/model"}
    assert _needs(post(gw, "/text-to-image", broke, json=t2i)) == 512 * 512 * 1
    t2i = {"prompt": "x", "height": 64, "width": 80, "num_images_per_prompt": 2}
    assert _needs(post(gw, "/text-to-image", broke, json=t2i)) == 64 * 80 * 2 * 3
    # upscale: the uploaded image's pixels at upscale's default price.
    image = {"image": ("a.jpg", still_image(70, 30, "mjpeg"), "image/jpeg")}
    r = post(gw, "/upscale", broke, data={"prompt": "x"}, files=image)
    assert _needs(r) == 70 * 30 * 2
    # The global price (5) for everything else.
    r = post(gw, "/image-to-text", broke, files=image)
    assert _needs(r) == 70 * 30 * 5
    r = post(gw, "/image-to-video", broke, data={"height": "32", "width": "48"}, files=image)
    assert _needs(r) == 32 * 48 * 25 * 5
    audio = {"audio": ("a.wav", wav_audio(1.5), "audio/wav")}
    assert _needs(post(gw, "/audio-to-text", broke, files=audio)) == 1500 * 5
    chat = {"model": "", "messages": [CHAT], "stream": False, "max_tokens": 40}
    assert _needs(post(gw, "/llm", broke, json=chat)) == 40 * 5
    assert _needs(post(gw, "/text-to-speech", broke, json={"text": "naïve"})) == 5000 * 5
    # Async image-to-video holds credit before it answers 202.
    r = post(gw, "/image-to-video", {**broke, "Prefer": "respond-async"}, files=image)
    assert _needs(r) == 576 * 1024 * 25 * 5


def test_ai_requests_are_in_the_session_log(gw: Gateway, rich: tuple[str, dict[str, str]]) -> None:
    r = post(gw, "/text-to-speech", rich[1], json={"text": "hi"})
    assert r.status_code == 503
    sessions = gw.admin("GET", "/admin/sessions").json()
    assert any(s["kind"] == "ai" and s["key_id"] == rich[0] for s in sessions)


def test_gateway_routes_keep_their_own_error_body(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/api/me", timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_openapi_lists_the_ai_routes(gw: Gateway) -> None:
    paths = httpx.get(f"{gw.url}/openapi.json", timeout=10).json()["paths"]
    for route in (
        "/text-to-image",
        "/image-to-image",
        "/image-to-video",
        "/image-to-video/result",
        "/upscale",
        "/audio-to-text",
        "/segment-anything-2",
        "/llm",
        "/image-to-text",
        "/text-to-speech",
    ):
        assert "post" in paths[route], route
    body = paths["/text-to-image"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["prompt"]
    form = paths["/upscale"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary"
    assert set(form["required"]) == {"prompt", "image"}
    chat = paths["/llm"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat["properties"]["messages"]["items"]["required"] == ["role", "content"]


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[str, list[str]]]:
    """An auth webhook that allows request URLs with ``token=good`` and denies the rest."""
    with webhook_server(lambda url: (200 if "token=good" in url else 403, b"")) as h:
        yield h


def test_the_auth_webhook_admits_ai_requests_without_a_key(
    env: Env, hook: tuple[str, list[str]]
) -> None:
    gw = env.gateway(expect_unhealthy=True, FARM_AUTH_WEBHOOK_URL=hook[0])
    r = post(gw, "/text-to-speech?token=bad", {}, json={"text": "hi"})
    assert r.status_code == 403 and "auth webhook denied" in error(r)
    # Allowed, billed outside the gateway: it gets as far as the (empty) pool.
    r = post(gw, "/text-to-speech?token=good", {}, json={"text": "hi"})
    assert r.status_code == 503 and error(r) == "Service Unavailable Error"
    assert [u.rsplit("/", 1)[1] for u in hook[1]] == [
        "text-to-speech?token=bad",
        "text-to-speech?token=good",
    ]


def test_ai_requests_count_against_the_keys_rate_limit(env: Env) -> None:
    gw = env.gateway(expect_unhealthy=True, FARM_RATE_BURST="2", FARM_RATE_LIMIT_PER_MINUTE="1")
    _, key = gw.key(credits=10**9)
    auth = {"Authorization": f"Bearer {key}"}
    codes = [post(gw, "/text-to-speech", auth, json={"text": "hi"}) for _ in range(3)]
    assert [r.status_code for r in codes] == [503, 503, 429]
    assert "rate limit" in error(codes[2]) and int(codes[2].headers["retry-after"]) >= 1
