"""The gateway's edge: bodies that stall or stop, credit and caps checked before any work,
revocation at once. One gateway in this process (uvicorn on a thread), on real PostgreSQL and
Redis; its one orchestrator is never reached, as nothing here gets as far as running a job."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.errors import AuthFailed
from gateway.ledger import Ledger
from gateway.settings import GatewaySettings
from gateway.state import GatewayState
from tests.farm.harness import free_port, wait_for

TASK_CAP = 5


@dataclass
class Edge:
    url: str
    port: int
    state: GatewayState
    #: Task inputs: a server that answers nothing until ``release`` is set.
    stalled_input: str
    release: threading.Event

    def key(self, credits: int) -> tuple[str, str]:
        raw, info = self.state.ledger.create_key("edge", credits)
        return info.id, raw


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    from tests.conftest import PG_URL, REDIS_HOST, REDIS_PORT, need_service

    need_service("PostgreSQL", "127.0.0.1", 5432)
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    import sqlalchemy as sa

    home = tmp_path_factory.mktemp("edge")
    schema = f"e_{home.name[-8:].replace('-', '_')}_{free_port()}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    release = threading.Event()

    class Stalled(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(60)
            self.send_error(404)

        def log_message(self, *_: object) -> None:
            pass

    inputs = ThreadingHTTPServer(("127.0.0.1", 0), Stalled)
    inputs.daemon_threads = True
    threading.Thread(target=inputs.serve_forever, daemon=True).start()
    orchestrator = {
        "name": "unreached",
        "node_url": "http://127.0.0.1:9",
        "price_per_unit": 1,
        "broker_url": "redis://127.0.0.1:9/0",
        "database_url": "sqlite://",
        "blob_url": f"file://{home / 'orch-blobs'}",
    }
    settings = GatewaySettings(
        gateway_database_url=f"{PG_URL}?options=-csearch_path%3D{schema}",
        gateway_redis_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{15 - free_port() % 4}",
        gateway_blob_url=f"file://{home / 'blobs'}",
        orchestrators=[orchestrator],  # type: ignore[list-item]
        max_concurrent_tasks=TASK_CAP,
        rate_burst=10_000,
        rate_limit_per_minute=600_000,
        body_timeout_s=1.0,
        fetch_allow="127.0.0.1/32",
        probe_interval_s=60,
    )
    state = GatewayState.build(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, state), host="127.0.0.1", port=port, log_level="info")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="the gateway")
    try:
        yield Edge(
            f"http://127.0.0.1:{port}",
            port,
            state,
            f"http://127.0.0.1:{inputs.server_address[1]}/clip.mp4",
            release,
        )
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)
        inputs.shutdown()
        inputs.server_close()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _raw(edge: Edge, path: str, key: str, declared: int, sent: bytes, kind: str) -> socket.socket:
    """A request whose headers promise ``declared`` bytes of body, of which ``sent`` come."""
    s = socket.create_connection(("127.0.0.1", edge.port), timeout=30)
    s.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        + sent
    )
    return s


def _answer(s: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("path", "kind", "shape"),
    [
        ("/live/stall/0.ts", "video/mp2t", "errors"),
        ("/api/transcode", "application/json", "errors"),
        ("/upscale", "multipart/form-data; boundary=x", "error"),
    ],
)
def test_a_body_that_stalls_is_408_in_the_routes_error_shape(
    edge: Edge, path: str, kind: str, shape: str
) -> None:
    _, key = edge.key(10**9)
    start = b"\x47" * 1024
    if kind.startswith("multipart/"):
        start = (
            b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + start
        )
    elif kind == "application/json":
        start = b'{"input": {"url": "' + b"a" * 1024
    with _raw(edge, path, key, 3_000_000, start, kind) as s:
        status, body = _answer(s)  # the socket's own timeout (30 s) bounds the wait
    assert status == 408, body
    if shape == "errors":
        assert body["code"] == "request_timeout"
        assert body["errors"] == ["the request body did not arrive within 1 s"]
    else:
        assert body == {"error": {"message": "the request body did not arrive within 1 s"}}


def test_a_client_that_leaves_mid_body_is_one_line_in_the_log(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = edge.key(10**9)
    caplog.set_level(logging.INFO)
    s = _raw(edge, "/live/gone/0.ts", key, 3_000_000, b"\x47" * 1024, "video/mp2t")
    s.close()

    def logged() -> bool:
        return any("left before sending its body" in r.getMessage() for r in caplog.records)

    wait_for(logged, timeout=20, what="the disconnect's log line")
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


def test_a_key_without_credit_cannot_create_a_task(edge: Edge) -> None:
    _, key = edge.key(0)
    r = httpx.post(
        f"{edge.url}/api/transcode",
        headers={"Authorization": f"Bearer {key}"},
        json={"input": {"url": edge.stalled_input}},
        timeout=30,
    )
    assert r.status_code == 402, r.text
    assert r.json()["code"] == "insufficient_credit"


def test_the_task_cap_holds_under_concurrent_requests(edge: Edge) -> None:
    _, key = edge.key(10**9)

    def create(_: int) -> int:
        return httpx.post(
            f"{edge.url}/api/transcode",
            headers={"Authorization": f"Bearer {key}"},
            json={"input": {"url": edge.stalled_input}},
            timeout=60,
        ).status_code

    barrier_size = 24
    with ThreadPoolExecutor(barrier_size) as pool:
        statuses = list(pool.map(create, range(barrier_size)))
    assert statuses.count(200) == TASK_CAP, statuses
    assert statuses.count(429) == barrier_size - TASK_CAP, statuses


def test_revocation_by_another_process_takes_effect_at_once(edge: Edge) -> None:
    key_id, key = edge.key(10**9)
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{edge.url}/api/me", headers=auth, timeout=10).status_code == 200
    # `farm keys revoke` is a process of its own, with a ledger of its own.
    cli = Ledger(edge.state.settings.gateway_database_url)
    cli.revoke(key_id)
    cli.engine.dispose()
    r = httpx.get(f"{edge.url}/api/me", headers=auth, timeout=10)
    assert r.status_code == 401 and r.json()["errors"] == ["API key revoked"], r.text
    # A job already past authentication when the key is revoked is refused as revoked, too.
    with pytest.raises(AuthFailed, match="revoked"):
        edge.state.ledger.reserve(key_id, 1, "edge:revoked")
