"""The orchestrator's wire edge under generated input: what a buggy or hostile gateway sends.

A paid node (anvil with the development contracts, a real cluster behind it) takes ``SegData``,
``net.Payment`` and ``OrchestratorRequest`` messages built by hypothesis from valid ones: fields
replaced by edge values (wrong lengths, negative and out-of-range numbers, unknown enums,
garbage bytes), the ``SegData`` signed again so that the checks past its signature are reached,
and bodies that are the signed segment, garbage with its hash, empty, or not what was signed.

Every answer must be one of go-livepeer's: a plain-text refusal (400, 402, 403, 413), or a 200
whose body is a ``TranscodeResult`` (data, or an error for input that does not transcode); a
gRPC call answers an ``OrchestratorInfo`` or a refusal, never an internal error. The node logs
no unhandled exception, and afterwards an honest segment still transcodes, paid.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain import pm_pb2
from chain.devchain import Anvil, DevChain, bootstrap
from chain.payment import price_from_net
from chain.sender import FEE_MARGIN, fee_pixels
from chain.signing import keccak256
from farm.golivepeer import net_pb2
from farm.media.profiles import MAX_FPS, MAX_WIDTH, parse_profiles
from farm.media.synth import make_segment
from tests.farm.harness import Cluster, cluster_env
from tests.farm.livepeer_gateway import LivepeerGateway, Session
from tests.farm.test_orchestrator import OrchestratorNode, _check
from tests.farm.test_orchestrator_chain import chain_env
from tests.fuzz import fuzz_settings

#: Generated requests per edge (FARM_WIRE_EXAMPLES for a longer run): about half a minute.
FUZZ = fuzz_settings(100, "FARM_WIRE_EXAMPLES")
LADDER = parse_profiles("P144p30fps16x9")
REFUSALS = {400, 402, 403, 413}

_INT32 = (-(2**31), -1, 0, 1, 2**31 - 1)
_SIZES = (-2, 0, 1, 2, 64, 98, MAX_WIDTH + 2, 2**31 - 1)
_FPS = (0, 1, 30, MAX_FPS + 1, 2**32 - 1)
_NAMES = ("P144p", "low", "a.b-c_d", "", "bad name", "x" * 65, "é")


def _sampled(values: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


@st.composite
def video_profiles(draw: st.DrawFn) -> net_pb2.VideoProfile:
    return net_pb2.VideoProfile(
        name=draw(_sampled(_NAMES) | st.text(max_size=8)),
        width=draw(_sampled(_SIZES)),
        height=draw(_sampled(_SIZES)),
        bitrate=draw(_sampled((-1, 0, 999, 1000, 200_000, 2**31 - 1))),
        fps=draw(_sampled(_FPS)),
        fpsDen=draw(_sampled((0, 1, 1001, 2**32 - 1))),
        format=draw(st.integers(0, 3)),
        profile=draw(st.integers(0, 6)),
        gop=draw(_sampled((*_INT32, 2000))),
        encoder=draw(st.integers(0, 6)),
    )


@st.composite
def valid_profiles(draw: st.DrawFn) -> net_pb2.VideoProfile:
    """A profile the node takes, small enough to encode at once, in any codec and shape."""
    return net_pb2.VideoProfile(
        name=draw(st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True)),
        width=draw(_sampled((2, 16, 64, 98))),
        height=draw(_sampled((2, 16, 64, 98))),
        bitrate=draw(_sampled((1000, 200_000))),
        fps=draw(_sampled((0, 1, 30, 60))),
        fpsDen=draw(_sampled((0, 1, 1001))),
        format=draw(st.integers(0, 1)),
        profile=draw(st.integers(0, 4)),
        gop=draw(_sampled((-1, 0, 1, 2000))),
        encoder=draw(_sampled((0, 0, 1, 3, 4))),
    )


#: One field of a SegData replaced; each applies itself to the message.
SEG_MUTATIONS = st.one_of(
    st.tuples(st.just("manifestId"), st.binary(max_size=80)),
    st.tuples(st.just("manifestId"), st.text(max_size=20).map(str.encode)),
    st.tuples(st.just("seq"), st.sampled_from((-(2**63), -1, 0, 2**40, 2**63 - 1))),
    st.tuples(st.just("hash"), st.binary(max_size=40)),
    st.tuples(st.just("duration"), _sampled((*_INT32, 1000, 10**7))),
    st.tuples(st.just("profiles"), st.binary(max_size=16)),
    st.tuples(st.just("fullProfiles"), st.lists(video_profiles(), max_size=3)),
    st.tuples(st.just("fullProfiles3"), st.lists(video_profiles(), max_size=11)),
    st.tuples(st.just("capabilities"), st.lists(st.integers(0, 2**64 - 1), max_size=3)),
    st.tuples(st.just("auth_token"), st.sampled_from(("drop", "session", "expiry", "token"))),
    st.tuples(
        st.just("segment_parameters"),
        st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    ),
    st.tuples(st.just("ForceSessionReinit"), st.booleans()),
)

#: One field of a Payment replaced.
PAYMENT_MUTATIONS = st.one_of(
    st.tuples(st.just("sender"), st.binary(max_size=22)),
    st.tuples(
        st.sampled_from(
            (
                "recipient",
                "face_value",
                "win_prob",
                "recipient_rand_hash",
                "seed",
                "expiration_block",
            )
        ),
        st.binary(max_size=40),
    ),
    st.tuples(st.just("creation_round"), st.sampled_from((-(2**63), -1, 0, 2**63 - 1))),
    st.tuples(st.just("creation_round_block_hash"), st.binary(max_size=40)),
    st.tuples(
        st.just("expected_price"), st.tuples(st.sampled_from(_INT32), st.sampled_from(_INT32))
    ),
    st.tuples(
        st.just("ticket_sender_params"),
        st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=70)), max_size=4),
    ),
    st.tuples(st.just("replay"), st.none()),
    st.tuples(st.just("drop_params"), st.none()),
)

BODIES = st.one_of(
    st.just(("signed", b"")),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=3000)),
    st.just(("empty", b"")),
    st.tuples(st.just("unsigned"), st.binary(max_size=200)),
)

HEADERS = st.one_of(
    st.just(None),
    # Any bytes a header may carry (visible ASCII and Latin-1), then base64 of garbage.
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=40).map(
        lambda s: s.encode("latin-1")
    ),
    st.binary(max_size=300).map(base64.b64encode),
)


def _resign(gw: LivepeerGateway, seg: net_pb2.SegData) -> None:
    """Sign ``seg`` as the gateway would, whatever its fields now hold."""
    wire = list(seg.fullProfiles3 or seg.fullProfiles2 or seg.fullProfiles)
    tail = "".join(keccak256(p.name.encode())[:4].hex() for p in wire).encode()
    seq = seg.seq.to_bytes(32, "big", signed=True)
    assert gw.sender is not None
    seg.sig = gw.sender.signer.sign_hash(keccak256(seg.manifestId + seq + seg.hash + tail))


def _mutate_segment(seg: net_pb2.SegData, field: str, value: Any) -> None:
    if field in ("fullProfiles", "fullProfiles3"):
        for name in ("fullProfiles", "fullProfiles2", "fullProfiles3"):
            seg.ClearField(name)
        getattr(seg, field).extend(value)
    elif field == "capabilities":
        seg.capabilities.bitstring[:] = value
    elif field == "auth_token":
        if value == "drop":
            seg.ClearField("auth_token")
        elif value == "session":
            seg.auth_token.session_id = "not-the-session"
        elif value == "expiry":
            seg.auth_token.expiration = 1
        else:
            seg.auth_token.token = os.urandom(32)
    elif field == "segment_parameters":
        setattr(seg.segment_parameters, "from", value[0])
        seg.segment_parameters.to = value[1]
    else:
        setattr(seg, field, value)


def _mutate_payment(message: pm_pb2.Payment, field: str, value: Any, last: bytes) -> None:
    params = message.ticket_params
    if field == "sender":
        message.sender = value
    elif field in ("recipient", "face_value", "win_prob", "recipient_rand_hash", "seed"):
        setattr(params, field, value)
    elif field == "expiration_block":
        params.expiration_block = value
    elif field == "creation_round":
        message.expiration_params.creation_round = value
    elif field == "creation_round_block_hash":
        message.expiration_params.creation_round_block_hash = value
    elif field == "expected_price":
        message.expected_price.pricePerUnit, message.expected_price.pixelsPerUnit = value
    elif field == "ticket_sender_params":
        del message.ticket_sender_params[:]
        for nonce, sig in value:
            message.ticket_sender_params.add(sender_nonce=nonce, sig=sig)
    elif field == "replay" and last:
        message.ParseFromString(last)  # the previous payment again: its nonces are spent
    elif field == "drop_params":
        message.ClearField("ticket_params")


@pytest.fixture(scope="module")
def devchain(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> DevChain:
    return bootstrap(anvil.web3(), tmp_path_factory.mktemp("chain") / "devchain.json")


@pytest.fixture
def paid(
    tmp_path: Path, redis_url: str, postgres_url: str, devchain: DevChain
) -> Iterator[tuple[OrchestratorNode, LivepeerGateway]]:
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    cluster.env.update(chain_env(devchain))
    try:
        cluster.start_worker()
        node = OrchestratorNode(cluster)
        gw = node.gateway(devchain.broadcaster.private_key)
        try:
            yield node, gw
        finally:
            gw.close()
            node.close()
    finally:
        cluster.stop()


def _unhandled(node: OrchestratorNode) -> list[str]:
    """Lines of the cluster's logs that say an exception went unhandled."""
    marks = ("Traceback", "Exception in ASGI", "Error in ASGI", "Internal Server Error")
    return [
        line
        for log in node.cluster.home.glob("*.log")
        for line in log.read_text(errors="replace").splitlines()
        if any(m in line for m in marks)
    ]


def _adopt(session: Session, result: net_pb2.TranscodeResult) -> None:
    if result.HasField("info"):  # refreshed params: their nonces start again
        session.info, session.nonce = result.info, 0


def test_segment_requests_from_a_hostile_gateway_get_go_livepeers_answers(
    paid: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    node, gw = paid
    session = gw.session()
    data = make_segment(160, 96, 30, 0.5)
    price = price_from_net(session.info.price_info)
    fee = fee_pixels(((p.width, p.height, Fraction(p.fps, p.fps_den)) for p in LADDER), 0.5)
    seen: dict[int, int] = {}
    last_payment = [b""]

    @given(
        target=st.sampled_from(("segment", "payment", "body", "headers", "ladder")),
        seg_changes=st.lists(SEG_MUTATIONS, min_size=1, max_size=3),
        resign=st.booleans(),
        pay_changes=st.lists(PAYMENT_MUTATIONS, min_size=1, max_size=2),
        body=BODIES,
        raw_segment=HEADERS,
        raw_payment=HEADERS,
        ladder=st.lists(valid_profiles(), min_size=1, max_size=4, unique_by=lambda p: p.name),
    )
    @FUZZ
    def answered(
        target: str,
        seg_changes: list[tuple[str, Any]],
        resign: bool,
        pay_changes: list[tuple[str, Any]],
        body: tuple[str, bytes],
        raw_segment: bytes | None,
        raw_payment: bytes | None,
        ladder: list[net_pb2.VideoProfile],
    ) -> None:
        # Each request damages one layer (the segment's fields, the payment's, the body, the
        # headers themselves) or asks for an odd but valid ladder; the rest is honest.
        kind, blob = body if target == "body" else ("signed", b"")
        content = {"signed": data, "empty": b""}.get(kind, blob)
        seg = gw.seg_data(session, "fuzz", 1 + sum(seen.values()), data, LADDER, 500)
        if kind in ("garbage", "empty"):
            seg.hash = keccak256(content)
            _resign(gw, seg)
        if target == "segment":
            for field, value in seg_changes:
                _mutate_segment(seg, field, value)
            if resign:
                _resign(gw, seg)
        if target == "ladder":
            for p in ladder:
                p.format = ladder[0].format  # one container for the whole ladder
            _mutate_segment(seg, "fullProfiles3", ladder)
            _resign(gw, seg)
        session.balance = Fraction(0)  # whatever the node made of the last request, pay anew
        header, _ = gw.payment(session, fee * FEE_MARGIN * price * len(seg.fullProfiles3 or [0]))
        message = pm_pb2.Payment.FromString(base64.b64decode(header))
        if target == "payment":
            for field, value in pay_changes:
                _mutate_payment(message, field, value, last_payment[0])
        last_payment[0] = message.SerializeToString()
        headers = {
            "Livepeer-Segment": base64.b64encode(seg.SerializeToString()),
            "Livepeer-Payment": base64.b64encode(message.SerializeToString()),
            "Content-Type": b"video/MP2T",
        }
        if target == "headers":  # headers that are not messages at all, or none
            for name, raw in (("Livepeer-Segment", raw_segment), ("Livepeer-Payment", raw_payment)):
                headers.pop(name)
                if raw is not None:
                    headers[name] = raw
        r = gw.http.post(f"{session.info.transcoder}/segment", content=content, headers=headers)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        if r.status_code in REFUSALS:
            assert r.headers["content-type"].startswith("text/plain"), r.headers
            assert r.text.strip(), "a refusal says why"
            return
        assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
        result = net_pb2.TranscodeResult.FromString(r.content)
        _adopt(session, result)
        assert result.WhichOneof("result") in ("data", "error"), result
        if result.WhichOneof("result") == "data":
            assert len(result.data.segments) >= 1
            for s in result.data.segments:
                assert gw.http.get(s.url).status_code == 200, s.url

    answered()
    # The generated requests reached past the checks, not only the first refusal.
    assert seen.get(200, 0) >= 3 and len(seen) >= 3, seen
    assert not _unhandled(node), _unhandled(node)
    # The gateway's honest segments still transcode and are paid for.
    fresh = gw.session()
    for seq in range(2):
        result, renditions = gw.transcode(
            fresh, "after-fuzz", seq, make_segment(320, 240, 30, 1.0, start=seq), LADDER, 1000
        )
        _check(result, renditions, LADDER)
    assert sum(fresh.sent) > 0


def test_orchestrator_requests_from_a_hostile_gateway_get_info_or_a_refusal(
    paid: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    node, gw = paid
    answers: dict[str, int] = {}

    @given(
        address=st.one_of(st.just(None), st.binary(max_size=22)),
        sig=st.one_of(st.just(None), st.binary(max_size=70)),
        bits=st.lists(st.integers(0, 2**64 - 1), max_size=3),
        raw=st.one_of(st.just(None), st.binary(max_size=200)),
    )
    @FUZZ
    def answered(
        address: bytes | None, sig: bytes | None, bits: list[int], raw: bytes | None
    ) -> None:
        request = gw.orchestrator_request()
        if address is not None:
            request.address = address
        if sig is not None:
            request.sig = sig
        if bits:
            request.capabilities.bitstring[:] = bits
        message = raw if raw is not None else request.SerializeToString()
        try:
            info = net_pb2.OrchestratorInfo.FromString(gw._unary("GetOrchestrator", message))
        except grpc.RpcError as e:
            code = e.code()
            answers[code.name] = answers.get(code.name, 0) + 1
            # A refusal is go-livepeer's plain error; INTERNAL only for bytes that are no
            # OrchestratorRequest at all.
            assert code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (code, e.details())
            if code == grpc.StatusCode.INTERNAL:
                assert raw is not None and (e.details() or "").startswith("malformed request")
            return
        answers["OK"] = answers.get("OK", 0) + 1
        assert info.transcoder == node.url

    answered()
    assert answers.get("OK", 0) >= 1 and answers.get("UNKNOWN", 0) >= 1, answers
    assert not _unhandled(node), _unhandled(node)


def test_refusals_keep_the_connection_and_log_no_error(
    paid: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    """A segment refused on its headers, while its body is still arriving, leaves the
    gateway's connection open for its next request; a large body refused closes it mid-upload,
    which the node takes as the client's doing (farm.node.serve), not as an error."""
    node, gw = paid
    session = gw.session()
    url = f"{session.info.transcoder}/segment"
    bad = {"Livepeer-Segment": "not base64!", "Content-Type": "video/MP2T"}
    ports: set[int | str] = set()

    def note_port(r: Any) -> None:
        try:
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr")[1])
        except OSError:
            ports.add("closed by the node")

    def slowly(size: int) -> Iterator[bytes]:
        for _ in range(size // 10_000):
            yield os.urandom(10_000)
            time.sleep(0.02)  # the refusal is ready long before the body is in

    for size in (0, 10_000, 200_000):
        r = gw.http.post(url, content=slowly(size), headers=bad)
        assert (r.status_code, r.text.strip()) == (403, "ErrorSegEncoding")
        note_port(r)
    assert len(ports) == 1, ports  # one connection for all three
    for size in (300_000, 5_000_000):
        r = gw.http.post(url, content=os.urandom(size), headers=bad)
        assert r.status_code == 403
    data = make_segment(320, 240, 30, 1.0)
    result, renditions = gw.transcode(session, "after-refusals", 0, data, LADDER, 1000)
    _check(result, renditions, LADDER)
    assert not _unhandled(node), _unhandled(node)
