"""``farm ai-runner`` as a real process: ai-runner's routes, auth, errors and SSE."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.farm.ai.helpers import ai_runner, decode, picture, png

MODEL = "stabilityai/stable-diffusion-x4-upscaler"
TOKEN = "runner-token"


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ai_runner(tmp_path_factory.mktemp("runner"), "upscale", token=TOKEN) as (url, _):
        yield url


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ai_runner(tmp_path_factory.mktemp("runner"), "llm") as (url, _):
        yield url


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _upscale(
    url: str,
    path: str = "/upscale",
    headers: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    image: bytes | None = None,
) -> httpx.Response:
    files = {"image": ("in.png", image if image is not None else png(picture(32, 24)), "image/png")}
    return httpx.post(
        url + path,
        data={"prompt": "sharper"} if data is None else data,
        files=files,
        headers=AUTH if headers is None else headers,
        timeout=30,
    )


def test_health_version_and_hardware(upscaler: str) -> None:
    assert httpx.get(upscaler + "/health").json() == {"status": "OK"}
    version = httpx.get(upscaler + "/version").json()
    assert version["pipeline"] == "upscale" and version["model_id"] == MODEL
    info = httpx.get(upscaler + "/hardware/info").json()
    assert info["pipeline"] == "upscale" and info["gpu_info"] == {}


@pytest.mark.parametrize("path", ["/upscale", "/upscale/"])
def test_upscale_route_and_trailing_slash(upscaler: str, path: str) -> None:
    response = _upscale(upscaler, path, data={"prompt": "x", "seed": "42", "model_id": MODEL})
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    assert image["seed"] == 42 and image["nsfw"] is False
    out = decode(base64.b64decode(image["url"].split(",", 1)[1]))
    assert out.shape == (96, 128, 3)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic x"},
        {"Authorization": b"Bearer \xe9t\xe9"},  # not ASCII: compare_digest refuses such str
    ],
)
def test_bad_or_missing_token_is_401(upscaler: str, headers: dict[str, Any]) -> None:
    response = _upscale(upscaler, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": {"msg": "Invalid bearer token."}}
    assert response.headers["www-authenticate"] == "Bearer"


def test_mismatched_model_is_400(upscaler: str) -> None:
    response = _upscale(upscaler, data={"prompt": "x", "model_id": "other/model"})
    assert response.status_code == 400
    assert response.json() == {
        "detail": {"msg": f"pipeline configured with {MODEL} but called with other/model."}
    }


def test_undecodable_image_is_400(upscaler: str) -> None:
    response = _upscale(upscaler, image=b"this is not a picture" * 20)
    assert response.status_code == 400
    assert "could not be decoded" in response.json()["detail"]["msg"]


def test_missing_prompt_and_wrong_types_are_422(upscaler: str) -> None:
    response = _upscale(upscaler, data={})
    assert response.status_code == 422
    assert any(d["loc"] == ["body", "prompt"] for d in response.json()["detail"])
    response = _upscale(upscaler, data={"prompt": "x", "seed": "abc"})
    assert response.status_code == 422
    no_image = httpx.post(upscaler + "/upscale", data={"prompt": "x"}, headers=AUTH)
    assert no_image.status_code == 422
    assert any(d["loc"] == ["body", "image"] for d in no_image.json()["detail"])


def test_llm_json_and_stream(llm: str) -> None:
    body = {"messages": [{"role": "user", "content": "hello farm"}], "model": "farm/echo"}
    whole = httpx.post(llm + "/llm", json=body).json()
    assert whole["choices"][0]["message"]["content"] == "hello farm"
    assert whole["model"] == "farm/echo"
    with httpx.stream("POST", llm + "/llm/", json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "hello farm"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_llm_errors(llm: str) -> None:
    wrong = httpx.post(llm + "/llm", json={"messages": [], "model": "meta-llama/x"})
    assert wrong.status_code == 400 and "called with meta-llama/x" in wrong.json()["detail"]["msg"]
    empty = httpx.post(llm + "/llm", json={"messages": []})
    assert empty.status_code == 400 and "messages" in empty.json()["detail"]["msg"]
    invalid = httpx.post(llm + "/llm", json={"messages": "hi"})
    assert invalid.status_code == 422
    # JSON's NaN is read, refused, and not echoed back (it is not JSON when written).
    nan = httpx.post(
        llm + "/llm", content=b'{"messages": NaN}', headers={"Content-Type": "application/json"}
    )
    assert nan.status_code == 422
    assert nan.json() == {
        "detail": [{"loc": ["body", "messages"], "msg": "Input should be a valid list",
                    "type": "list_type"}]
    }  # fmt: skip
    for bad in (b'"temperature": NaN', b'"top_p": 2', b'"max_tokens": 0'):
        body = b'{"messages": [{"role": "user", "content": "hi"}], ' + bad + b"}"
        refused = httpx.post(
            llm + "/llm", content=body, headers={"Content-Type": "application/json"}
        )
        assert refused.status_code == 422, (bad, refused.text)
    assert httpx.post(llm + "/upscale", json={}).status_code == 404


def test_unknown_pipeline_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "farm.cli", "ai-runner", "--pipeline", "text-to-image"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert b"no built-in runner for text-to-image" in done.stderr
