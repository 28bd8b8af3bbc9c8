"""The node as a Livepeer orchestrator, tried by a gateway that speaks only the wire format.

``farm node`` runs in its own process over TLS (hypercorn, ALPN h2) in front of a real cluster
(Redis broker, PostgreSQL job table, a CPU worker); tests.farm.livepeer_gateway plays
go-livepeer's gateway: GetOrchestrator, ``POST /segment`` with a signed SegData and a
``net.Payment``, then the rendition downloads.
"""

from __future__ import annotations

import base64
import http.server
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import grpc
import httpx
import pytest

from chain.payment import price_from_net
from chain.sender import fee_pixels, tickets_needed
from chain.signing import Signer, keccak256, recover
from farm.golivepeer import net_pb2
from farm.golivepeer.wire import capability_bits
from farm.jobs import JobStore
from farm.media.profiles import VideoProfile, parse_profiles
from farm.media.synth import make_segment
from farm.orchestrator.segdata import flatten
from farm.orchestrator.tokens import token_mac
from farm.remote.tls import ensure_certificate
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for
from tests.farm.livepeer_gateway import LivepeerGateway
from tests.farm.livepeer_gateway import flatten as wire_flatten

LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")
ANVIL_KEY_0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


# -- vectors from the protocol's description ----------------------------------------------


def test_segment_flatten_and_signatures_match_the_reference_vectors() -> None:
    data_hash = b"browns".ljust(32, b"\x00")
    names = ["P144p30fps16x9", "P240p30fps16x9"]
    flat = flatten(b"abcdef", 1234, data_hash, names)
    assert flat == wire_flatten(b"abcdef", 1234, data_hash, names)
    assert flat == (
        bytes.fromhex("616263646566")
        + bytes(30)
        + bytes.fromhex("04d2")
        + b"browns"
        + bytes(26)
        + b"fca40bf9c0a6517a"
    )
    assert keccak256(flat).hex() == (
        "08a398e7e7a5a545b0b07d9e7e1eab52b4131e0df1621bd53ee6e7550a15465b"
    )
    signer = Signer(bytes.fromhex(ANVIL_KEY_0))
    assert signer.sign_hash(keccak256(flat)).hex() == (
        "c21b3d8ca7798cc7309226c4a3049ad40a54d89a894c1982d022032ace083d49"
        "306e324703cc7bd0897ed99fd14cb74820a04d86fdc840d82e1a3afc712870691c"
    )
    address = b"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert keccak256(address).hex() == (
        "db2ec52069cba65d62a560cad9088e7a709d09e7c14b33d740b428038e383e34"
    )
    assert signer.sign_hash(keccak256(address)).hex() == (
        "47d66008c2c5b0671b8e7b43b62245ae9c4ba5f6ff7e94328b68eb45090cb108"
        "0815dec67a20bdec15ce794c9ce271fa8e6552d6b0976ab7a0b92d5516b32ef31c"
    )
    results = keccak256(keccak256(b"rendition-0") + keccak256(b"rendition-1"))
    assert results.hex() == "280a8d232fedf497ed3ee90fbb9127030b958aa2b6ce582fed735d929e7a9257"
    assert signer.sign_hash(results).hex() == (
        "d60fd46ff6b8a6cba86afd1fc3750db746264cef1d9b0bc8b4162996588a27b8"
        "14ab9ca06e997435554fefbc57863819c4ae0567f220c4b09eacc4f336677f6b1b"
    )


def test_auth_token_mac_matches_the_reference_vector() -> None:
    assert token_mac(b"foo", "bar", 100).hex() == (
        "e896e58f32128ad59566fbef0ae8d4b702f6f08cdfe3f17b544696016f5e5423"
    )


def test_ticket_counts_and_fee_pixels_match_the_reference_vectors() -> None:
    one = Fraction(1)
    assert tickets_needed(Fraction(2), Fraction(1), one) == 0
    assert tickets_needed(Fraction(2), Fraction(2), one) == 0
    assert tickets_needed(Fraction(1), Fraction(5), one) == 4
    assert tickets_needed(Fraction(1, 4), Fraction(2), one) == 2
    assert tickets_needed(Fraction(-5), Fraction(2), one) == 7
    p144 = (256, 144, Fraction(30))
    p240 = (426, 240, Fraction(30))
    assert fee_pixels([p144], 2.0) == 2_211_840
    assert fee_pixels([p144, p240], 2.0) == 8_346_240
    assert fee_pixels([p144, p240], 2.2) == 12_519_360
    assert fee_pixels([(256, 144, Fraction(0)), p240], 3.0) == 15_837_120
    assert fee_pixels([(256, 144, Fraction(30000, 1001))], 3.0) * 2 > 0
    assert fee_pixels([(256, 144, Fraction(30000, 1001)), p240], 2.2) == 12_519_360


# -- a node in front of a real cluster -----------------------------------------------------


class OrchestratorNode:
    """``farm node`` over TLS with a worker behind it."""

    def __init__(self, cluster: Cluster, **env: str) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.cert, key = ensure_certificate(cluster.home / "tls", ("127.0.0.1", "localhost"))
        self.proc = cluster.spawn(
            "-v",
            "node",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--tls-cert={self.cert}",
            f"--tls-key={key}",
            log="node.log",
            env={**cluster.env, "FARM_SERVICE_URI": self.url, **env},
        )
        self.http = httpx.Client(base_url=self.url, verify=False, timeout=10)
        wait_for(self._up, timeout=30, what="the node over HTTPS")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.cluster.logs()
        try:
            return self.http.get("/healthz").status_code in (200, 503)
        except httpx.TransportError:
            return False

    def gateway(self, key: str | None = None) -> LivepeerGateway:
        return LivepeerGateway(self.url, self.cert, key)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    yield c
    c.stop()


@pytest.fixture
def offchain(cluster: Cluster) -> Iterator[tuple[OrchestratorNode, LivepeerGateway]]:
    cluster.start_worker()
    # The tests' segment server is on loopback: the operator's own storage, allowed.
    node = OrchestratorNode(cluster, FARM_FETCH_ALLOW="127.0.0.1/32")
    gw = node.gateway()
    yield node, gw
    gw.close()
    node.close()


def node_jobs(node: OrchestratorNode) -> JobStore:
    return node.cluster.client().jobs


def _pixels(rendition: bytes, fmt: str = "mpegts") -> int:
    """Decoded frames x width x height: what a go-livepeer gateway checks against ``pixels``."""
    import io

    total = 0
    with av.open(io.BytesIO(rendition), format=fmt) as container:
        for frame in container.decode(video=0):
            total += frame.width * frame.height
    return total


def _check(
    result: net_pb2.TranscodeResult, renditions: list[bytes], profiles: list[VideoProfile]
) -> None:
    assert result.WhichOneof("result") == "data", result.error
    assert len(result.data.segments) == len(profiles) == len(renditions)
    for seg, data, profile in zip(result.data.segments, renditions, profiles, strict=True):
        assert f"/{profile.name}/" in seg.url.split("?")[0]
        assert seg.pixels == _pixels(data) > 0


def test_gateway_transcodes_a_stream_in_one_session(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    node, gw = offchain
    session = gw.session()
    info = session.info
    assert info.transcoder == node.url
    assert info.auth_token.session_id and len(info.auth_token.session_id) == 8
    bits = capability_bits(info.capabilities.bitstring)
    # What a live transcoding job asks for (go-livepeer's default set, less what is not done).
    assert {0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12} <= bits
    assert capability_bits(info.capabilities.mandatories) == {12}
    assert price_from_net(info.price_info) == 0 and not info.HasField("ticket_params")
    for seq in range(10):
        data = make_segment(320, 240, 30, 1.0, start=seq * 1.0)
        result, renditions = gw.transcode(session, "stream-1", seq, data, LADDER, 1000)
        assert result.seq == seq
        _check(result, renditions, LADDER)
        assert session.info.auth_token.session_id == info.auth_token.session_id
    # The last segment sent again (a gateway retrying after a lost answer) is not
    # transcoded again: the same job answers.
    done = node_jobs(node).counts()["done"]
    again, renditions = gw.transcode(session, "stream-1", 9, data, LADDER, 1000)
    assert [s.pixels for s in again.data.segments] == [s.pixels for s in result.data.segments]
    assert node_jobs(node).counts()["done"] == done
    gw.end(session)


def test_a_body_arriving_after_admission_is_checked_and_transcoded(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    """The credentials are checked while the body streams in; a body that is still arriving
    when they pass is checked by the event loop instead, with the same answers."""
    _, gw = offchain
    session = gw.session()
    data = make_segment(320, 240, 30, 1.0)

    def post(seg: net_pb2.SegData, body: bytes) -> httpx.Response:
        def late() -> Iterator[bytes]:
            time.sleep(0.5)  # well after the admission
            yield body[:1000]
            time.sleep(0.1)
            yield body[1000:]

        headers = {"Livepeer-Segment": _header(seg), "Content-Type": "video/MP2T"}
        return gw.http.post(f"{session.info.transcoder}/segment", content=late(), headers=headers)

    seg = gw.seg_data(session, "late", 0, data, LADDER, 1000)
    r = post(seg, data)
    assert r.status_code == 200, r.text
    result = net_pb2.TranscodeResult.FromString(r.content)
    assert result.WhichOneof("result") == "data", result.error
    renditions = [gw.http.get(s.url).content for s in result.data.segments]
    _check(result, renditions, LADDER)
    # A late body that is not the signed one is refused as a prompt one is.
    seg = gw.seg_data(session, "late", 1, data, LADDER, 1000)
    r = post(seg, data[:-188])
    assert (r.status_code, r.text.strip()) == (403, "Forbidden")


def test_input_passed_by_url(offchain: tuple[OrchestratorNode, LivepeerGateway]) -> None:
    _, gw = offchain
    data = make_segment(320, 240, 30, 1.0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    hits: list[str] = []

    class Counting(Handler):
        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/seg.ts"
        session = gw.session()
        result, renditions = gw.transcode(session, "by-url", 0, data, LADDER, 1000, by_url=url)
        _check(result, renditions, LADDER)
        assert hits == ["/seg.ts"]
        # A rendition URL's expiry and signature are ASCII or nothing: other scripts' digits
        # and non-ASCII signatures are go-livepeer's 404, not a crash.
        signed = httpx.URL(result.data.segments[0].url)
        expires, sig = signed.params["expires"], signed.params["sig"]
        for forged in ({"expires": "\u0661" * len(expires)}, {"sig": "\u00e9" * len(sig)}):
            got = gw.http.get(str(signed.copy_merge_params(forged)))
            assert (got.status_code, got.text) == (404, "ErrNotFound\n"), forged
        # Anything else that is not public is refused before it is asked, with go-livepeer's
        # one answer for a URL it could not fetch.
        seg = gw.seg_data(session, "by-url", 1, data, LADDER, 1000)
        for internal in (
            f"http://127.0.0.2:{port}/seg.ts",
            f"http://2130706434:{port}/seg.ts",
            "http://169.254.169.254/latest/meta-data/",
        ):
            r = gw.post_segment(
                session, seg, internal.encode(), content_type="application/vnd+livepeer.uri"
            )
            assert (r.status_code, r.text) == (400, "BadRequest\n"), internal
        assert hits == ["/seg.ts"]
    finally:
        server.shutdown()
        server.server_close()


def _header(seg: net_pb2.SegData) -> str:
    return base64.b64encode(seg.SerializeToString()).decode()


def test_bad_requests_get_golivepeers_status_and_text(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    node, gw = offchain
    session = gw.session()
    data = make_segment(320, 240, 30, 1.0)
    good = gw.seg_data(session, "bad", 1, data, LADDER, 1000)

    def post(headers: dict[str, str], body: bytes = data) -> httpx.Response:
        return gw.http.post(f"{node.url}/segment", content=body, headers=headers)

    r = post({"Livepeer-Segment": "not base64!"})
    assert r.status_code == 403 and r.text.strip() == "ErrorSegEncoding"
    r = post({"Livepeer-Segment": base64.b64encode(b"\xff\xff\xff").decode()})
    assert r.status_code == 403
    r = post({"Livepeer-Segment": _header(good), "Livepeer-Payment": "!!"})
    assert r.status_code == 402 and "base64 decode error" in r.text
    r = post({"Livepeer-Segment": _header(good), "Livepeer-Payment": "////"})
    assert r.status_code == 402 and "protobuf unmarshal error" in r.text

    def variant(**changes: object) -> net_pb2.SegData:
        seg = net_pb2.SegData()
        seg.CopyFrom(good)
        for name, value in changes.items():
            if name == "token":
                seg.auth_token.CopyFrom(value)  # type: ignore[arg-type]
            elif name == "no_token":
                seg.ClearField("auth_token")
            else:
                setattr(seg, name, value)
        return seg

    forged = net_pb2.AuthToken()
    forged.CopyFrom(good.auth_token)
    forged.token = b"\x00" * 32
    expired = net_pb2.AuthToken()
    expired.CopyFrom(good.auth_token)
    expired.expiration = 1000
    for seg, status, text in [
        (variant(no_token=True), 403, "missing auth token"),
        (variant(token=forged), 403, "invalid auth token"),
        # An earlier expiration with the old MAC is forged too: the MAC covers it.
        (variant(token=expired), 403, "invalid auth token"),
        (variant(duration=-1), 403, "invalid duration"),
        (variant(duration=300_001), 403, "invalid duration"),
        (variant(hash=keccak256(b"other")), 403, "Forbidden"),
        (variant(manifestId=b"../../etc"), 403, "invalid manifest id"),
    ]:
        r = post({"Livepeer-Segment": _header(seg)})
        assert (r.status_code, r.text.strip()) == (status, text), seg
    # Garbage media: accepted (200), then a TranscodeResult error, never a hang or a crash.
    junk = b"\x47" + bytes(range(256)) * 40
    seg = variant(hash=keccak256(junk))
    r = post({"Livepeer-Segment": _header(seg)}, junk)
    assert r.status_code == 200
    result = net_pb2.TranscodeResult.FromString(r.content)
    assert result.WhichOneof("result") == "error" and result.error
    # A rendition URL is served only as signed, and not past its expiry.
    ok, renditions = gw.transcode(session, "urls", 0, data, LADDER, 1000)
    url = ok.data.segments[0].url
    assert gw.http.get(url).content == renditions[0]
    assert gw.http.get(url.split("?")[0]).status_code == 404
    assert gw.http.get(url.replace("sig=", "sig=0")).status_code == 404
    # A malformed GetOrchestrator request is a gRPC error, not a crash.
    with pytest.raises(grpc.RpcError):
        gw._unary("GetOrchestrator", b"\xff\xff")
    assert node.proc.poll() is None


def test_oversized_segment_is_refused(cluster: Cluster) -> None:
    cluster.start_worker()
    node = OrchestratorNode(cluster, FARM_MAX_BLOB_BYTES="100000")
    gw = node.gateway()
    try:
        session = gw.session()
        data = make_segment(320, 240, 30, 2.0, noise=60)
        assert len(data) > 100_000
        seg = gw.seg_data(session, "big", 0, data, LADDER, 2000)
        r = gw.post_segment(session, seg, data)
        assert r.status_code == 413
    finally:
        gw.close()
        node.close()


def test_session_cap_refuses_new_sessions(cluster: Cluster) -> None:
    cluster.start_worker()
    node = OrchestratorNode(cluster, FARM_MAX_SESSIONS="1")
    gw = node.gateway()
    try:
        first = gw.session()
        data = make_segment(320, 240, 30, 1.0)
        result, _ = gw.transcode(first, "capped", 0, data, LADDER, 1000)
        assert result.WhichOneof("result") == "data"
        with pytest.raises(grpc.RpcError) as refused:
            gw.session()
        assert "OrchestratorCapped" in str(refused.value.details())
        # Ending the session frees its place.
        gw.end(first)
        assert gw.session().info.auth_token.session_id
    finally:
        gw.close()
        node.close()


def test_ping_is_signed_by_the_node_key(cluster: Cluster) -> None:
    node = OrchestratorNode(cluster, FARM_ETH_PRIVATE_KEY=ANVIL_KEY_0)
    gw = node.gateway()
    try:
        sig = gw.ping(b"hello")
        assert recover(keccak256(b"hello"), sig) == Signer(bytes.fromhex(ANVIL_KEY_0)).address
    finally:
        gw.close()
        node.close()


def test_renditions_survive_a_worker_killed_mid_segment(cluster: Cluster) -> None:
    worker = cluster.start_worker()
    cluster.start_beat()
    node = OrchestratorNode(cluster)
    gw = node.gateway()
    try:
        session = gw.session()
        # Long enough to transcode (over a second here) that the kill lands mid-segment.
        data = make_segment(1920, 1080, 30, 8.0)
        seg = gw.seg_data(session, "killed", 0, data, LADDER, 8000)
        done: dict[str, httpx.Response] = {}
        thread = threading.Thread(
            target=lambda: done.setdefault("r", gw.post_segment(session, seg, data))
        )
        thread.start()
        jobs = cluster.client().jobs
        wait_for(
            lambda: jobs.counts().get("running", 0) > 0 or done,
            timeout=30,
            what="the segment to start on the worker",
        )
        assert not done, "the segment was transcoded before the worker could be killed"
        cluster.kill9(worker)
        cluster.start_worker()
        thread.join(timeout=90)
        assert not thread.is_alive(), "the gateway was left hanging"
        r = done["r"]
        assert r.status_code == 200
        result = net_pb2.TranscodeResult.FromString(r.content)
        if result.WhichOneof("result") == "data":
            renditions = [gw.http.get(s.url).content for s in result.data.segments]
            _check(result, renditions, LADDER)
        else:  # go-livepeer's gateway retries this elsewhere
            assert result.error
    finally:
        gw.close()
        node.close()


def test_operator_sets_the_price_quoted_to_gateways(
    offchain: tuple[OrchestratorNode, LivepeerGateway], cluster: Cluster
) -> None:
    node, gw = offchain
    out = cluster.farm(
        "chain",
        "config",
        "--price-per-unit",
        "14",
        "--pixels-per-unit",
        "6",
        "--node-url",
        node.url,
        "--node-ca",
        str(node.cert),
    )
    assert out.returncode == 0, out.stderr
    assert "node price: 7 wei per 3 pixel(s)" in out.stdout
    assert price_from_net(gw.get_orchestrator().price_info) == Fraction(7, 3)
    refused = node.http.put(
        "/orchestrator/price",
        json={"price_per_unit": 1, "pixels_per_unit": 1},
        headers={"Authorization": "Bearer wrong"},
    )
    assert refused.status_code == 401
    assert node.http.get("/orchestrator/price").json() == {
        "price_per_unit": 7,
        "pixels_per_unit": 3,
    }
