"""The gateway buying from orchestrators over the Livepeer network protocol.

Three project nodes (``farm node`` over TLS, each in front of its own cluster on real Redis
and PostgreSQL with a CPU worker) are configured as ``livepeer`` entries only: the gateway holds
none of their credentials and reaches them by GetOrchestrator, ``POST /segment`` and rendition
downloads. Node ``cheap-a`` and ``cheap-b`` are plain; ``dear`` quotes a high price and is
reached through a lying front (a TLS HTTP/2 proxy) that claims more pixels in every result
than its renditions hold, as an overcharging orchestrator would: the project's nodes verify
their own renditions, so only the gateway's checks stand between such a result and a caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
import redis
import sqlalchemy as sa

from chain.signing import Signer, keccak256
from farm.golivepeer import net_pb2
from farm.golivepeer.wire import MessageReader, frame
from farm.media.synth import make_segment
from farm.orchestrator.service import SESSIONS_KEY
from farm.remote.tls import ensure_certificate, fingerprint_of_file
from tests.conftest import PG_URL, REDIS_HOST, REDIS_PORT, need_service
from tests.factories import coded_clip
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for
from tests.farm.test_orchestrator import OrchestratorNode
from tests.gateway.conftest import Env, Gateway
from tests.gateway.test_ingest import parts

PROFILES = [
    {"name": "low", "width": 256, "height": 144, "bitrate": 300000, "fps": 30},
    {"name": "mid", "width": 320, "height": 180, "bitrate": 500000, "fps": 30},
]
CONFIG = json.dumps({"profiles": PROFILES})
#: Encoded pixels of a 1 s 30 fps segment in PROFILES.
PIXELS = 30 * (256 * 144 + 320 * 180)
#: The dear node's price in wei per pixel, and the cap the tests set below it.
DEAR_PRICE = 1000


class LyingFront:
    """A TLS HTTP/2 front for a node that passes everything through, except that each
    result lies (``lie``): "pixels", its first rendition claims one more frame of pixels than
    it holds; "signature", it is signed by another key. The orchestrator's URI and its
    rendition URLs are the front's own, so segments and downloads come through it."""

    def __init__(self, node: OrchestratorNode, home: Path, lie: str = "pixels") -> None:
        self.lie = lie
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        self.node = node
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.cert, key = ensure_certificate(home / "front-tls", ("127.0.0.1",))
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.alpn_protocols = ["h2", "http/1.1"]
        config.certfile, config.keyfile = str(self.cert), str(key)
        config.accesslog = None
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            with contextlib.suppress(ssl.SSLError, OSError):  # clients still connected at close
                self._loop.run_until_complete(
                    serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]
                )

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        wait_for(self._up, timeout=20, what="the lying front")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", verify=False, timeout=2).status_code > 0
        except httpx.HTTPError:
            return False

    def _info(self, info: net_pb2.OrchestratorInfo) -> None:
        info.transcoder = self.url

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {
            k.decode(): v.decode()
            for k, v in scope["headers"]
            if k.lower() in (b"content-type", b"te", b"livepeer-segment", b"livepeer-payment")
        }
        async with httpx.AsyncClient(http2=True, verify=False, timeout=60) as client:
            query = scope["query_string"].decode()
            r = await client.request(
                scope["method"],
                f"{self.node.url}{scope['path']}{'?' + query if query else ''}",
                content=body,
                headers=headers,
            )
        content = r.content
        if scope["path"] == "/net.Orchestrator/GetOrchestrator" and r.status_code == 200:
            info = net_pb2.OrchestratorInfo.FromString(MessageReader().feed(content)[0])
            self._info(info)
            content = frame(info.SerializeToString())
        elif scope["path"] == "/segment" and r.status_code == 200:
            result = net_pb2.TranscodeResult.FromString(content)
            for rendition in result.data.segments:  # downloads come through here too
                rendition.url = rendition.url.replace(self.node.url, self.url, 1)
            if result.WhichOneof("result") == "data" and self.lie == "pixels":
                result.data.segments[0].pixels += 256 * 144
            elif result.WhichOneof("result") == "data":
                result.data.sig = Signer(b"\x42" * 32).sign_hash(keccak256(b"other"))
            if result.HasField("info"):
                self._info(result.info)
            content = result.SerializeToString()
        out = [(b"content-type", r.headers.get("content-type", "").encode())]
        if "grpc-status" in r.headers or scope["path"].startswith("/net."):
            out.append((b"grpc-status", r.headers.get("grpc-status", "0").encode()))
        await send({"type": "http.response.start", "status": r.status_code, "headers": out})
        await send({"type": "http.response.body", "body": content})

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class Node:
    name: str
    region: str
    node: OrchestratorNode
    front: LyingFront | None = None

    @property
    def url(self) -> str:
        return self.front.url if self.front is not None else self.node.url

    def entry(self, price: int = 1, pin: bool = False) -> dict[str, object]:
        entry: dict[str, object] = {
            "kind": "livepeer",
            "name": self.name,
            "address": self.url,
            "region": self.region,
            "price_per_unit": price,
        }
        if pin:
            entry["cert_fingerprint"] = fingerprint_of_file(self.node.cert)
        return entry


@dataclass
class Network:
    env: Env
    nodes: dict[str, Node]

    def gateway(self, names: list[str], **env: str) -> Gateway:
        entries = [self.nodes[n].entry(pin=n == "cheap-b") for n in names]
        return self.env.gateway(
            FARM_ORCHESTRATORS=json.dumps(entries),
            FARM_ESTIMATE_MARGIN="0",
            FARM_MAX_CONCURRENT_JOBS="100",
            FARM_RATE_BURST="1000",
            FARM_RATE_LIMIT_PER_MINUTE="60000",
            FARM_SUSPEND_S="600",
            **env,
        )


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    need_service("PostgreSQL", "127.0.0.1", 5432)
    home = tmp_path_factory.mktemp("network")
    specs = [
        ("cheap-a", "us", {}),
        ("cheap-b", "us", {}),
        (
            "dear",
            "eu",
            {"FARM_PRICE_PER_UNIT": str(DEAR_PRICE)},
        ),
    ]
    base = int(os.environ.get("FARM_TEST_REDIS_DB") or 8 + (os.getpid() % 2) * 4)
    dbs = [base + i for i in range(len(specs) + 1)]
    for db in dbs:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()
    engine = sa.create_engine(PG_URL)
    schemas = [f"g_{uuid.uuid4().hex[:10]}" for _ in range(len(specs) + 1)]
    with engine.begin() as conn:
        for s in schemas:
            conn.exec_driver_sql(f"CREATE SCHEMA {s}")
    env = Env(home, dbs, schemas)
    clusters: list[Cluster] = []
    nodes: dict[str, Node] = {}
    try:
        for i, (name, region, extra) in enumerate(specs):
            cluster_home = home / name
            cluster_home.mkdir()
            variables = cluster_env(
                cluster_home, f"redis://{REDIS_HOST}:{REDIS_PORT}/{dbs[i]}", env.pg(schemas[i])
            )
            variables.update(extra)
            cluster = Cluster(cluster_home, variables)
            clusters.append(cluster)
            cluster.start_worker()
            node = OrchestratorNode(cluster)
            front = LyingFront(node, cluster_home) if name == "dear" else None
            nodes[name] = Node(name, region, node, front)
        yield Network(env, nodes)
    finally:
        for g in env.gateways:
            if g.poll() is None:
                g.terminate()
                g.wait(timeout=15)
        for n in nodes.values():
            n.node.close()
            if n.front is not None:
                n.front.close()
        for c in clusters:
            c.stop()
        with engine.begin() as conn:
            for s in schemas:
                conn.exec_driver_sql(f"DROP SCHEMA {s} CASCADE")
        engine.dispose()
        for db in dbs:
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()


@pytest.fixture(scope="module")
def segments() -> list[bytes]:
    return [make_segment(320, 240, 30, 1.0, start=float(i)) for i in range(4)]


def post(gw: Gateway, stream: str, seq: int, data: bytes, key: str) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/live/{stream}/{seq}.ts",
        content=data,
        headers={
            "Content-Duration": "1000",
            "Livepeer-Transcode-Configuration": CONFIG,
            "Authorization": f"Bearer {key}",
            "Accept": "multipart/mixed",
        },
        timeout=120,
    )


def check_renditions(r: httpx.Response) -> int:
    """Every rendition of the ladder back, decodable, at its size; the decoded pixels."""
    assert r.status_code == 200, r.text
    got = parts(r)
    assert [h["Rendition-Name"] for h, _ in got] == [p["name"] for p in PROFILES]
    total = 0
    for (_, body), profile in zip(got, PROFILES, strict=True):
        with av.open(io.BytesIO(body)) as c:
            for frame in c.decode(video=0):
                assert (frame.width, frame.height) == (profile["width"], profile["height"])
                total += frame.width * frame.height
    return total


def orchestrators(gw: Gateway) -> dict[str, dict[str, object]]:
    return {o["name"]: o for o in gw.admin("GET", "/admin/orchestrators").json()}


def session_log(gw: Gateway, session_id: str) -> list[dict[str, object]]:
    r = gw.admin("GET", f"/admin/sessions/{session_id}")
    assert r.status_code == 200, r.text
    attempts: list[dict[str, object]] = r.json()["attempts"]
    return attempts


def node_sessions(node: Node) -> int:
    """Transcoding sessions the node holds (farm.orchestrator.service.SESSIONS_KEY)."""
    client = redis.Redis.from_url(node.node.cluster.env["FARM_BROKER_URL"])
    try:
        return int(client.zcard(SESSIONS_KEY))
    finally:
        client.close()


def test_a_wrong_certificate_pin_is_refused(network: Network) -> None:
    entry = network.nodes["cheap-a"].entry()
    entry["cert_fingerprint"] = fingerprint_of_file(network.nodes["cheap-b"].node.cert)
    gw = network.env.gateway(FARM_ORCHESTRATORS=json.dumps([entry]), expect_unhealthy=True)
    state = orchestrators(gw)["cheap-a"]
    assert state["healthy"] is False
    assert "not the pinned" in str(state["probe_error"])


def test_the_session_of_a_stream_that_ended_is_ended(
    network: Network, segments: list[bytes]
) -> None:
    gw = network.gateway(["cheap-b"], FARM_LIVEPEER_SESSION_IDLE_S="1")
    _, key = gw.key(credits=10 * PIXELS)
    before = node_sessions(network.nodes["cheap-b"])
    check_renditions(post(gw, "short", 0, segments[0], key))
    assert node_sessions(network.nodes["cheap-b"]) == before + 1
    # No more segments: the gateway ends the session long before the node would drop it.
    wait_for(
        lambda: node_sessions(network.nodes["cheap-b"]) == before,
        timeout=20,
        what="EndTranscodingSession",
    )


def test_the_orchestrator_webhooks_trusted_orchestrators_are_used(
    network: Network, segments: list[bytes]
) -> None:
    cheap, dear = network.nodes["cheap-a"], network.nodes["dear"]
    answer = json.dumps(
        [{"address": cheap.url, "score": 1}, {"address": dear.url, "score": 0.5}]
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw = network.env.gateway(
            FARM_ORCHESTRATORS="[]",
            FARM_ORCH_WEBHOOK_URL=f"http://127.0.0.1:{server.server_address[1]}/orchestrators",
            FARM_DISCOVERY_INTERVAL_S="0.5",
            FARM_DISCOVERY_PRICE_PER_UNIT="1",
        )
        name = f"hook-127.0.0.1-{cheap.node.port}"
        assert set(orchestrators(gw)) == {name}  # the untrusted score is left out
        _, key = gw.key(credits=10 * PIXELS)
        r = post(gw, "hooked", 0, segments[0], key)
        assert check_renditions(r) == PIXELS
        assert r.headers["Livepeer-Orchestrator"] == name
    finally:
        server.shutdown()
        server.server_close()
    # The webhook is gone: the last answer is kept.
    wait_for(lambda: "keeping 1 found before" in gw.log.read_text(), what="a failed refresh")
    assert set(orchestrators(gw)) == {name}
    check_renditions(post(gw, "hooked", 1, segments[1], key))


def test_a_twenty_segment_stream_plays_through_on_one_session(
    network: Network, segments: list[bytes]
) -> None:
    gw = network.gateway(["cheap-a", "cheap-b"])
    key_id, key = gw.key(credits=100 * PIXELS)
    served = set()
    for seq in range(20):
        r = post(gw, "twenty", seq, segments[seq % len(segments)], key)
        assert check_renditions(r) == PIXELS
        assert int(r.headers["Livepeer-Charged"]) == PIXELS  # the gateway's own price, 1/pixel
        served.add(r.headers["Livepeer-Orchestrator"])
    # The stream stayed with one orchestrator (and one session there) throughout.
    log = session_log(gw, f"{key_id}:twenty")
    assert len(served) == 1, (log, gw.log.read_text()[-3000:])
    assert node_sessions(network.nodes[served.pop()]) == 1
    assert [a["outcome"] for a in log] == ["done"] * 20
    assert all(a["pixels"] == PIXELS for a in log)
    assert gw.balance(key_id) == 80 * PIXELS
    state = orchestrators(gw)
    assert all(o["kind"] == "livepeer" and "broker_url" not in o for o in state.values())


def test_a_codec_no_livepeer_orchestrator_decodes_is_refused_before_any_charge(
    network: Network,
) -> None:
    # An MPEG-2 segment (a broadcast feed) on a gateway whose pool is all network
    # orchestrators: none decodes it, so nothing is held, tried or charged.
    gw = network.gateway(["cheap-a", "cheap-b"])
    key_id, key = gw.key(credits=10 * PIXELS)
    mpeg2 = coded_clip("mpeg2video", "mpegts", seconds=1.0, fps=30)
    r = post(gw, "broadcast", 0, mpeg2, key)
    assert r.status_code == 422, r.text
    assert "transcoded only by a farm cluster" in r.json()["errors"][0]
    assert gw.balance(key_id) == 10 * PIXELS
    assert not any(o["suspended"] for o in orchestrators(gw).values())


def test_the_price_cap_leaves_out_the_dear_orchestrator(
    network: Network, segments: list[bytes]
) -> None:
    gw = network.gateway(
        ["dear", "cheap-a"], FARM_REGION="eu", FARM_MAX_PRICE_PER_UNIT=str(DEAR_PRICE - 1)
    )
    key_id, key = gw.key(credits=100 * PIXELS)
    wait_for(lambda: orchestrators(gw)["dear"]["quoted_price"] is not None, what="a quote")
    assert orchestrators(gw)["dear"]["quoted_price"] == str(DEAR_PRICE)
    for seq in range(3):
        r = post(gw, "capped", seq, segments[seq], key)
        check_renditions(r)
        assert r.headers["Livepeer-Orchestrator"] == "cheap-a"
    # The dear one (in the gateway's region, so otherwise the first choice) was never tried.
    assert {a["orchestrator"] for a in session_log(gw, f"{key_id}:capped")} == {"cheap-a"}


def test_a_wrong_rendition_is_caught_recorded_and_suspends(
    network: Network, segments: list[bytes]
) -> None:
    # No cap: the dear node, in the gateway's region, is tried first, and its renditions
    # claim more pixels than they hold.
    gw = network.gateway(["dear", "cheap-a"], FARM_REGION="eu")
    key_id, key = gw.key(credits=100 * PIXELS)
    before = node_sessions(network.nodes["cheap-a"])
    r = post(gw, "damaged", 0, segments[0], key)
    assert check_renditions(r) == PIXELS
    assert r.headers["Livepeer-Orchestrator"] == "cheap-a"
    log = session_log(gw, f"{key_id}:damaged")
    assert [(a["orchestrator"], a["outcome"]) for a in log] == [
        ("dear", "failed"),
        ("cheap-a", "done"),
    ]
    assert log[0]["error_code"] == "result_invalid", log
    assert "pixels" in str(log[0]["error"])
    assert orchestrators(gw)["dear"]["suspended"] is True
    # The stream left the dear orchestrator: its session there was ended.
    wait_for(lambda: not node_sessions(network.nodes["dear"]), what="the session ended")
    assert node_sessions(network.nodes["cheap-a"]) == before + 1
    # Charged once, for the segment that was delivered.
    assert gw.balance(key_id) == 99 * PIXELS
    # The next segment does not go back to the suspended orchestrator.
    r = post(gw, "damaged", 1, segments[1], key)
    check_renditions(r)
    assert len(session_log(gw, f"{key_id}:damaged")) == 3


def test_a_node_killed_mid_stream_loses_nothing(network: Network, segments: list[bytes]) -> None:
    gw = network.gateway(["cheap-a", "cheap-b"])
    key_id, key = gw.key(credits=100 * PIXELS)
    first = None
    for seq in range(10):
        if seq == 4:
            assert first is not None
            victim = network.nodes[first].node
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=15)
        r = post(gw, "killed", seq, segments[seq % len(segments)], key)
        assert check_renditions(r) == PIXELS
        first = first or r.headers["Livepeer-Orchestrator"]
        if seq >= 4:
            assert r.headers["Livepeer-Orchestrator"] != first
    log = session_log(gw, f"{key_id}:killed")
    done = [a["seq"] for a in log if a["outcome"] == "done"]
    assert done == list(range(10))
    assert gw.balance(key_id) == 90 * PIXELS
