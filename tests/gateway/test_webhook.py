"""go-livepeer's auth webhook contract, with the gateway's timeout and cache."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from farm.media.synth import make_segment
from tests.gateway.conftest import Env, Gateway, webhook_server

WEBHOOK_PROFILES = [{"name": "hook144", "width": 256, "height": 144, "bitrate": 300000, "fps": 30}]


def _decide(url: str) -> tuple[int, bytes]:
    if "/slow/" in url:
        time.sleep(2)
    if "/denied/" in url:
        return 403, b""
    if "/plain/" in url:
        return 200, b""
    if "/preset/" in url:
        return 200, json.dumps({"manifestID": "preset", "presets": ["P144p30fps16x9"]}).encode()
    return 200, json.dumps({"manifestID": "renamed", "profiles": WEBHOOK_PROFILES}).encode()


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[str, list[str]]]:
    with webhook_server(_decide) as h:
        yield h


@pytest.fixture(scope="module")
def hooked(env: Env, hook: tuple[str, list[str]]) -> Gateway:
    return env.gateway(
        FARM_AUTH_WEBHOOK_URL=hook[0],
        FARM_AUTH_WEBHOOK_TIMEOUT_S="0.5",
        FARM_AUTH_WEBHOOK_CACHE_S="60",
    )


def push(gw: Gateway, path: str) -> httpx.Response:
    return httpx.post(
        f"{gw.url}{path}",
        content=make_segment(320, 240, 30, 1.0),
        headers={"Content-Duration": "1000"},
        timeout=60,
    )


def test_webhook_allows_renames_and_sets_profiles_once_per_stream(
    hooked: Gateway, hook: tuple[str, list[str]]
) -> None:
    _, calls = hook
    first = push(hooked, "/live/allowed/0.ts")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["manifestID"] == "renamed"
    assert [r["name"] for r in body["renditions"]] == ["hook144"]
    assert calls[-1].endswith("/live/allowed/0.ts")
    n = len(calls)
    assert push(hooked, "/live/allowed/1.ts").status_code == 200
    assert len(calls) == n  # cached: one call per stream, as go-livepeer makes
    plain = push(hooked, "/live/plain/0.ts")
    assert plain.status_code == 200 and plain.json()["manifestID"] == "plain"
    preset = push(hooked, "/live/preset/0.ts")
    assert preset.status_code == 200, preset.text
    assert [r["name"] for r in preset.json()["renditions"]] == ["P144p30fps16x9"]


def test_webhook_denial_and_timeout(hooked: Gateway) -> None:
    denied = push(hooked, "/live/denied/0.ts")
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    started = time.monotonic()
    slow = push(hooked, "/live/slow/0.ts")
    assert slow.status_code == 503 and "unreachable" in slow.json()["errors"][0]
    assert time.monotonic() - started < 2.0  # the 0.5 s timeout, not the webhook's 2 s
