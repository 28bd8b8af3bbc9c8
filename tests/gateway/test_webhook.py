"""go-livepeer's auth webhook contract, with the gateway's timeout and cache."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from farm.media.synth import make_segment
from tests.gateway.conftest import Env, Gateway

WEBHOOK_PROFILES = [{"name": "hook144", "width": 256, "height": 144, "bitrate": 300000, "fps": 30}]


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[str, list[str]]]:
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["url"]
            calls.append(url)
            if "/slow/" in url:
                time.sleep(2)
            if "/denied/" in url:
                self.send_response(403)
                self.end_headers()
                return
            body = (
                b""
                if "/plain/" in url
                else json.dumps({"manifestID": "renamed", "profiles": WEBHOOK_PROFILES}).encode()
            )
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/auth", calls
    server.shutdown()
    server.server_close()


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


def test_webhook_denial_and_timeout(hooked: Gateway) -> None:
    denied = push(hooked, "/live/denied/0.ts")
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    started = time.monotonic()
    slow = push(hooked, "/live/slow/0.ts")
    assert slow.status_code == 503 and "unreachable" in slow.json()["errors"][0]
    assert time.monotonic() - started < 2.0  # the 0.5 s timeout, not the webhook's 2 s
