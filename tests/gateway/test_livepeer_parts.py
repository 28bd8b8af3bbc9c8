"""The livepeer kind's parts that need no orchestrator: entries, sessions, payments, the
pixel count of a rendition."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chain.params import TicketParams
from chain.payment import MAX_TICKETS, decode_payment, params_to_net, price_to_net
from farm.golivepeer import net_pb2
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.protocol import FetchPolicy
from gateway.livepeer.client import (
    REFRESH_MARGIN_S,
    Broadcaster,
    LivepeerOrchestrator,
    OrchestratorRefused,
    OrchestratorUnreachable,
    ResultInvalid,
    Session,
    counted_pixels,
    manifest_id,
    same_origin,
)
from gateway.livepeer.discovery import WebhookDiscovery
from gateway.pool import Pool
from gateway.settings import GatewaySettings, OrchestratorConfig
from tests.fuzz import fuzz_settings

SENDER_KEY = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
CLUSTER = {
    "name": "own",
    "node_url": "http://127.0.0.1:8935",
    "broker_url": "redis://127.0.0.1:6379/0",
    "database_url": "sqlite:///x.db",
    "blob_url": "file:///tmp/x",
}


def test_entries_default_to_the_cluster_kind_and_keep_working() -> None:
    entry = OrchestratorConfig.model_validate(CLUSTER)
    assert entry.kind == "cluster" and entry.public()["kind"] == "cluster"
    with pytest.raises(ValidationError, match="missing broker_url"):
        OrchestratorConfig.model_validate({**CLUSTER, "broker_url": ""})


def test_a_livepeer_entry_is_an_address_and_holds_no_credentials() -> None:
    entry = OrchestratorConfig.model_validate(
        {"kind": "livepeer", "name": "net", "address": "https://o.example:8935", "region": "eu"}
    )
    assert entry.public() == {
        "name": "net",
        "kind": "livepeer",
        "region": "eu",
        "address": "https://o.example:8935",
        "discovered": False,
        "price_per_unit": 0,
        "pixels_per_unit": 1,
    }
    with pytest.raises(ValidationError, match="needs an address"):
        OrchestratorConfig.model_validate({"kind": "livepeer", "name": "net"})
    with pytest.raises(ValidationError, match="holds no cluster credentials"):
        OrchestratorConfig.model_validate(
            {**CLUSTER, "kind": "livepeer", "address": "https://o.example:8935"}
        )
    with pytest.raises(ValidationError):
        OrchestratorConfig.model_validate(
            {"kind": "livepeer", "name": "net", "address": "https://o.example:8935/path"}
        )
    settings = GatewaySettings.model_validate(
        {"orchestrators": [CLUSTER, {"kind": "livepeer", "name": "n", "address": "https://h"}]}
    )
    assert [o.kind for o in settings.orchestrators] == ["cluster", "livepeer"]


def test_a_sender_key_is_a_key_and_needs_a_chain() -> None:
    chain = {"eth_rpc_url": "http://127.0.0.1:8545", "eth_controller": "0x" + "11" * 20}
    GatewaySettings.model_validate({"eth_sender_key": SENDER_KEY, **chain})
    with pytest.raises(ValidationError, match="32-byte hex private key"):
        GatewaySettings.model_validate({"eth_sender_key": "not-a-key", **chain})
    with pytest.raises(ValidationError, match="needs FARM_ETH_RPC_URL and FARM_ETH_CONTROLLER"):
        GatewaySettings.model_validate({"eth_sender_key": SENDER_KEY})


def _info(expires_in: float, params: bool = True) -> net_pb2.OrchestratorInfo:
    info = net_pb2.OrchestratorInfo(transcoder="https://o.example:8935")
    info.auth_token.session_id = "0a1b2c3d"
    info.auth_token.token = b"t" * 32
    info.auth_token.expiration = int(time.time() + expires_in)
    info.price_info.CopyFrom(price_to_net(Fraction(100)))
    if params:
        p = TicketParams(
            recipient=b"\x11" * 20,
            face_value=10**12,
            win_prob=2**256 // 1000,
            recipient_rand_hash=b"\x33" * 32,
            seed=7,
            expiration_block=140,
            price_per_pixel=Fraction(100),
            creation_round=1,
            creation_round_block_hash=b"\x22" * 32,
        )
        info.ticket_params.CopyFrom(params_to_net(p))
    return info


def test_a_session_is_renewed_before_its_token_or_params_expire() -> None:
    block = [100]
    client = LivepeerOrchestrator(
        "o", "https://o.example:8935", Broadcaster(SENDER_KEY), block_number=lambda: block[0]
    )
    assert not client._expired(Session(_info(REFRESH_MARGIN_S + 60)))
    assert client._expired(Session(_info(REFRESH_MARGIN_S - 5)))  # go-livepeer's 180 s margin
    block[0] = 139  # the params' expiration block is the next one: expired for a sender
    assert client._expired(Session(_info(REFRESH_MARGIN_S + 60)))


def test_payments_follow_the_broadcasters_balance_rules() -> None:
    broadcaster = Broadcaster(SENDER_KEY)
    client = LivepeerOrchestrator("o", "https://o.example:8935", broadcaster)
    s = Session(_info(3600))
    ev = Fraction(10**12 * (2**256 // 1000), 2**256 - 1)
    # An empty balance and a fee of 2.5 EV: three tickets, nonces from 1.
    header, count, reserved, credit = client.payment(s, ev * Fraction(5, 2))
    assert (count, reserved, credit) == (3, 0, 3 * ev) and s.balance == 0
    payment = decode_payment(header)
    assert [t.sender_nonce for t, _ in payment.tickets] == [1, 2, 3]
    assert payment.sender == broadcaster.address and payment.price == 100
    # A balance that covers the fee: no tickets, and the price still stated.
    s.balance = ev * 4
    header, count, reserved, credit = client.payment(s, ev * 2)
    assert (count, reserved, credit) == (0, ev * 4, 0) and s.balance == 0
    assert decode_payment(header).tickets == ()
    # Off chain: an empty payment and nothing signed.
    off = LivepeerOrchestrator("o", "https://o.example:8935", Broadcaster())
    assert off.payment(Session(_info(3600, params=False)), ev) == ("", 0, 0, 0)
    assert Broadcaster().sign(b"\x00" * 32) == b""


def test_manifest_ids_say_nothing_of_the_key_and_suit_any_orchestrator() -> None:
    m = manifest_id("key-id:stream")
    assert m == manifest_id("key-id:stream") != manifest_id("key-id:other")
    assert m.isalnum() and "key" not in m and len(m) == 32


@pytest.mark.parametrize(
    ("funds", "refusal"),
    [
        ((10**18, 10**18, False), None),
        ((0, 10**18, False), "deposit or reserve is empty"),
        ((10**18, 0, False), "deposit or reserve is empty"),
        ((10**18, 10**18, True), "unlocking"),
        ((10**12 - 1, 10**18, False), "exceeds the gateway's deposit"),
    ],
)
def test_params_the_gateways_deposit_cannot_honour_are_refused(
    funds: tuple[int, int, bool], refusal: str | None
) -> None:
    client = LivepeerOrchestrator(
        "o", "https://o.example:8935", Broadcaster(SENDER_KEY), funds=lambda: funds
    )
    info = _info(3600)
    if refusal is None:
        client._check_info(info)
    else:
        with pytest.raises(OrchestratorRefused, match=refusal):
            client._check_info(info)
    # go-livepeer's -maxTicketEV.
    capped = LivepeerOrchestrator(
        "o", "https://o.example:8935", Broadcaster(SENDER_KEY), max_ticket_ev=10**8
    )
    with pytest.raises(OrchestratorRefused, match="exceeds 100000000"):
        capped._check_info(info)


def test_a_price_more_than_doubled_since_the_session_began_is_not_paid() -> None:
    client = LivepeerOrchestrator("o", "https://o.example:8935", Broadcaster(SENDER_KEY))
    s = Session(_info(3600))
    assert s.initial_price == 100
    s.info.price_info.CopyFrom(price_to_net(Fraction(200)))  # a refreshed info: doubled is paid
    assert client.payment(s, Fraction(1))[1] == 1
    s.info.price_info.CopyFrom(price_to_net(Fraction(201)))
    s.balance = Fraction(5)
    with pytest.raises(OrchestratorRefused, match="more than double"):
        client.payment(s, Fraction(1))
    assert s.balance == 5  # nothing reserved or sent


def test_renditions_are_fetched_from_the_orchestrator_only() -> None:
    base = "https://o.example:8935"
    assert same_origin("https://o.example:8935/stream/ab/low/1.ts?sig=x", base)
    assert not same_origin("https://o.example:8936/stream/ab/low/1.ts", base)
    assert not same_origin("http://o.example:8935/stream/ab/low/1.ts", base)
    assert not same_origin("https://169.254.169.254/latest/meta-data", base)
    assert not same_origin("https://o.example:notaport/x", base)
    assert not same_origin("/stream/ab/low/1.ts", base)


def test_rediscovery_adds_the_new_keeps_the_listed_and_drops_the_gone() -> None:
    listed = OrchestratorConfig(name="mine", kind="livepeer", address="https://a.example:8935")
    chain: dict[str, str] = {"chain-0101": "https://a.example:8935"}  # also listed by hand

    def entry(name: str, uri: str) -> OrchestratorConfig:
        return OrchestratorConfig(name=name, kind="livepeer", address=uri, discovered=True)

    pool = Pool([listed], discover=lambda: dict(chain), discovered=entry)
    pool.rediscover()
    assert [o.name for o in pool.orchestrators] == ["mine"]
    chain["chain-0202"] = "https://b.example:8935"
    pool.rediscover()
    assert [o.name for o in pool.orchestrators] == ["mine", "chain-0202"]
    assert all(o.livepeer is not None for o in pool.orchestrators)
    del chain["chain-0202"], chain["chain-0101"]
    pool.rediscover()
    assert [o.name for o in pool.orchestrators] == ["mine"]  # configured entries stay


def test_the_webhooks_trusted_orchestrators_are_taken() -> None:
    found = WebhookDiscovery.parse(
        [
            {"address": "https://a.example:8935", "score": 1},
            {"address": "https://b.example:8935/", "score": 2.5},
            {"address": "https://c.example:8935", "score": 0.5},  # neither pool: ignored
            {"address": "https://d.example:8935", "score": 0},  # untrusted: not for live
            {"address": "ftp://e.example:21", "score": 1},
            {"address": "https://f.example:8935/path", "score": 1},
        ]
    )
    assert found == {
        "hook-a.example-8935": "https://a.example:8935",
        "hook-b.example-8935": "https://b.example:8935",
    }
    with pytest.raises(ValueError, match="not a JSON list"):
        WebhookDiscovery.parse({"address": "https://a.example:8935"})
    with pytest.raises(ValueError, match="no address"):
        WebhookDiscovery.parse([{"score": 1}])


def test_a_renditions_pixels_are_counted_or_the_result_is_invalid() -> None:
    rendition = make_segment(426, 240, 30, 0.5, audio=False)
    assert counted_pixels(rendition, "mpegts") == (426, 240, 15, 15 * 426 * 240)
    with pytest.raises(ResultInvalid, match="does not decode"):
        counted_pixels(b"\x47" * 1000, "mpegts")
    with pytest.raises(ResultInvalid):
        counted_pixels(rendition[: len(rendition) // 2], "mp4")


def test_params_worth_next_to_nothing_are_refused_not_signed_without_end() -> None:
    """An orchestrator's params with a tiny EV a ticket: the fee would need millions of
    tickets. The payment is refused (an orchestrator takes at most 600), the balance kept."""
    client = LivepeerOrchestrator("o", "https://o.example:8935", Broadcaster(SENDER_KEY))
    info = _info(3600)
    info.ticket_params.face_value = (1).to_bytes(1, "big")
    info.ticket_params.win_prob = (2**256 - 1).to_bytes(32, "big")  # every ticket wins 1 wei
    s = Session(info)
    s.balance = Fraction(7)
    started = time.monotonic()
    with pytest.raises(OrchestratorRefused, match="needs 1000000 tickets"):
        client.payment(s, Fraction(10**6 + 7))
    assert time.monotonic() - started < 1.0 and s.balance == 7 and s.nonce == 0
    # Up to the bound, the tickets are signed.
    header, count, reserved, credit = client.payment(s, Fraction(600 + 7))
    assert (count, reserved, credit) == (600, 7, 600)
    assert len(decode_payment(header).tickets) == 600


_BYTES = st.one_of(st.binary(max_size=40), st.sampled_from((b"", b"\x00" * 20, b"\xff" * 32)))


@st.composite
def hostile_infos(draw: st.DrawFn) -> net_pb2.OrchestratorInfo:
    """OrchestratorInfo as any orchestrator on the network might send it: each field kept,
    or (one time in four) replaced by an edge value."""

    def damaged() -> bool:
        return draw(st.integers(0, 3)) == 0

    info = _info(draw(st.sampled_from((3600, -(10**6), 0, 10**12))))
    if damaged():
        info.transcoder = draw(st.sampled_from(("", "ftp://x", "é")))
    if damaged():
        info.ClearField("auth_token")
    numbers = st.sampled_from((-(2**63), -1, 0, 1, 2**63 - 1))
    if damaged():
        info.price_info.pricePerUnit = draw(numbers)
    if damaged():
        info.price_info.pixelsPerUnit = draw(numbers)
    if damaged():
        info.address = draw(_BYTES)
    params = info.ticket_params
    for name in ("recipient", "face_value", "win_prob", "recipient_rand_hash", "seed"):
        if damaged():
            setattr(params, name, draw(_BYTES))
    if damaged():
        params.expiration_block = draw(_BYTES)
    if damaged():
        params.expiration_params.creation_round = draw(numbers)
    if draw(st.integers(0, 9)) == 0:
        info.ClearField("ticket_params")
    return info


@fuzz_settings(300)
@given(
    info=hostile_infos(),
    fee=st.fractions(min_value=0, max_value=10**15),
    balance=st.integers(-(10**15), 10**15),
)
def test_any_orchestrator_info_is_taken_or_refused(
    info: net_pb2.OrchestratorInfo, fee: Fraction, balance: int
) -> None:
    """Whatever an orchestrator sends, the gateway takes its info and pays, or refuses it
    with OrchestratorRefused: no other exception, and no payment past the ticket bound."""
    client = LivepeerOrchestrator("o", "https://o.example:8935", Broadcaster(SENDER_KEY))
    try:
        client._check_info(info)
        s = Session(info)
        s.balance = Fraction(balance)
        header, count, reserved, _ = client.payment(s, fee)
    except OrchestratorRefused:
        return
    assert 0 <= count <= MAX_TICKETS and reserved == balance
    if count:
        assert len(decode_payment(header).tickets) == count


@pytest.mark.parametrize(
    ("address", "transcoder", "allowed"),
    [
        # The orchestrator's own address: taken as it is.
        ("https://8.8.8.8:8935", "https://8.8.8.8:8935", True),
        # Handed to another public host (go-livepeer allows it).
        ("https://8.8.8.8:8935", "https://1.1.1.1:9000", True),
        # From a public orchestrator into the gateway's own network: refused.
        ("https://8.8.8.8:8935", "https://127.0.0.1:8935", False),
        ("https://8.8.8.8:8935", "http://localhost:6379", False),
        ("https://8.8.8.8:8935", "https://10.0.0.5:8935", False),
        ("https://8.8.8.8:8935", "http://169.254.169.254", False),
        ("https://8.8.8.8:8935", "https://[::ffff:127.0.0.1]:8935", False),
        # Not an http(s) URL at all.
        ("https://8.8.8.8:8935", "ftp://8.8.8.8", False),
        ("https://8.8.8.8:8935", "https://8.8.8.8:port", False),
        # An orchestrator on the operator's own network may name another one there.
        ("https://127.0.0.1:8935", "https://10.0.0.5:8935", True),
    ],
)
def test_a_transcoder_uri_may_not_lead_from_the_network_into_the_gateways_own(
    address: str, transcoder: str, allowed: bool
) -> None:
    client = LivepeerOrchestrator("o", address, Broadcaster())
    info = _info(3600, params=False)
    info.transcoder = transcoder
    if allowed:
        client._check_info(info)
    else:
        with pytest.raises(OrchestratorRefused, match="transcoder URI"):
            client._check_info(info)


def test_the_operators_allow_list_lets_a_transcoder_uri_into_its_network() -> None:
    info = _info(3600, params=False)
    info.transcoder = "https://10.0.0.5:8935"
    allowed = LivepeerOrchestrator(
        "o", "https://8.8.8.8:8935", Broadcaster(), policy=FetchPolicy.parse(["10.0.0.0/8"])
    )
    allowed._check_info(info)
    with pytest.raises(OrchestratorRefused, match="leaves the public network"):
        LivepeerOrchestrator("o", "https://8.8.8.8:8935", Broadcaster())._check_info(info)


class _Hostile(BaseHTTPRequestHandler):
    """An orchestrator's HTTP side that answers as ``server.mode`` says."""

    protocol_version = "HTTP/1.1"

    def _send(self, status: int, chunks: Iterator[bytes], length: int | None = None) -> None:
        self.send_response(status)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            for chunk in chunks:
                if length is None:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                else:
                    self.wfile.write(chunk)
                self.wfile.flush()
            if length is None:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the gateway gave up: as it should

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "trickle":
            self._send(200, (b"\x00" for _ in range(100) if time.sleep(0.2) is None))
        elif mode == "flood":
            self._send(200, (b"\x00" * 65536 for _ in range(100)))
        elif mode == "refusal":
            self._send(500, (b"x" * 65536 for _ in range(16)))
        else:  # a result whose rendition trickles
            host, port = self.server.server_address[:2]  # type: ignore[index]
            result = net_pb2.TranscodeResult(seq=0)
            result.data.segments.add(url=f"http://{host}:{port}/stream/r.ts", pixels=1)
            body = result.SerializeToString()
            self._send(200, iter([body]), len(body))

    def do_GET(self) -> None:
        self._send(200, (b"G" for _ in range(100) if time.sleep(0.2) is None))

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[tuple[ThreadingHTTPServer, LivepeerOrchestrator, Session]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    client = LivepeerOrchestrator("o", address, Broadcaster())
    info = _info(3600, params=False)
    info.transcoder = address
    info.price_info.CopyFrom(price_to_net(Fraction(0)))  # off chain
    session = Session(info)
    client._sessions["s"] = session  # as GetOrchestrator would have made it
    yield server, client, session
    client.close()
    server.shutdown()


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("trickle", OrchestratorUnreachable, "took past the deadline"),
        ("flood", ResultInvalid, "exceeds 4194304 bytes"),
        ("refusal", OrchestratorRefused, "segment 0: 500 " + "x" * 296),
        ("rendition", OrchestratorUnreachable, "rendition download: the answer took past"),
    ],
)
def test_an_orchestrator_that_trickles_or_floods_its_answer_is_cut_off(
    hostile: tuple[ThreadingHTTPServer, LivepeerOrchestrator, Session],
    mode: str,
    error: type[Exception],
    message: str,
) -> None:
    """Whatever an orchestrator sends, the gateway keeps at most the limit of what it reads
    and stops at the segment's deadline (its HTTP client's timeouts count each read only)."""
    server, client, session = hostile
    server.mode = mode  # type: ignore[attr-defined]
    ladder = parse_profiles("P144p30fps16x9")
    started = time.monotonic()
    with pytest.raises(error) as raised:
        client.transcode(
            "s", 0, make_segment(160, 96, 30, 0.5), ladder, 0.5, "mpegts", started + 1.5
        )
    assert message in str(raised.value)
    assert time.monotonic() - started < 3.0
    assert session.balance == 0  # nothing was paid off chain, nothing lost


def test_an_llm_event_stream_is_read_in_lines_of_bounded_length() -> None:
    from gateway.livepeer.ai import _lines

    chunks = [b'data: {"a"', b": 1}\r\n\r\ndata: [DO", b"NE]\n", b"tail"]
    assert list(_lines(chunks, 64)) == ['data: {"a": 1}', "", "data: [DONE]", "tail"]
    # A line that never ends is refused as soon as it passes the cap, not held.
    endless = (b"x" * 1000 for _ in range(10**6))
    with pytest.raises(ResultInvalid, match="a line exceeds 4096 bytes"):
        list(_lines(endless, 4096))
    with pytest.raises(ResultInvalid):
        list(_lines([b"ok\n" + b"y" * 5000 + b"\nok\n"], 4096))
