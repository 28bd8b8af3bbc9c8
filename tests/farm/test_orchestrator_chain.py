"""The orchestrator paid on chain: tickets from a go-livepeer-style gateway, redeemed by beat.

anvil with the development contracts (``farm chain dev``'s bootstrap): the node's key is the
bonded orchestrator's, the gateway's the funded broadcaster's. Every ticket wins (the face
value is capped at the ticket's expected value), so that redemption can be checked to the wei.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine
from web3 import Web3

from chain import pm_pb2
from chain.client import ChainClient
from chain.devchain import Anvil, DevChain, bootstrap, mine
from chain.payment import price_from_net, uint_bytes
from chain.queue import TicketQueue
from chain.sender import TicketSender
from chain.signing import keccak256, recover
from farm.golivepeer import net_pb2
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.orchestrator.balances import Balances
from farm.orchestrator.chainview import CachedChain
from farm.registry import redis_py_url
from tests.farm.harness import Cluster, cluster_env, wait_for
from tests.farm.livepeer_gateway import LivepeerGateway
from tests.farm.test_orchestrator import OrchestratorNode, _check

LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")
PRICE = 10**7  # wei per pixel: a 1 s segment of this ladder costs a few tickets
EV = 10**15


@pytest.fixture(scope="module")
def devchain(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> DevChain:
    return bootstrap(anvil.web3(), tmp_path_factory.mktemp("chain") / "devchain.json")


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    yield c
    c.stop()


def chain_env(devchain: DevChain) -> dict[str, str]:
    return {
        "FARM_ETH_RPC_URL": devchain.rpc_url,
        "FARM_ETH_CONTROLLER": devchain.contracts["Controller"],
        "FARM_ETH_PRIVATE_KEY": devchain.orchestrator.private_key,
        "FARM_PRICE_PER_UNIT": str(PRICE),
        "FARM_TICKET_EV_WEI": str(EV),
        "FARM_TICKET_MAX_FACE_VALUE_WEI": str(EV),
        "FARM_REDEEM_GAS": "1",
        "FARM_REDEEM_INTERVAL_S": "1",
        "FARM_REWARD_INTERVAL_S": "3600",
    }


@pytest.fixture
def paid(
    cluster: Cluster, devchain: DevChain
) -> Iterator[tuple[OrchestratorNode, LivepeerGateway]]:
    cluster.env.update(chain_env(devchain))
    # Chain reads fresh on every request, so that blocks mined here count at once.
    cluster.env["FARM_CHAIN_CACHE_S"] = "0"
    cluster.start_worker()
    node = OrchestratorNode(cluster)
    gw = node.gateway(devchain.broadcaster.private_key)
    yield node, gw
    gw.close()
    node.close()


def _deposit(devchain: DevChain, sender: str) -> int:
    client = ChainClient(devchain.rpc_url, devchain.contracts["Controller"])
    return client.sender_info(bytes.fromhex(sender[2:])).deposit


def test_tickets_paid_on_segments_are_redeemed_by_beat(
    paid: tuple[OrchestratorNode, LivepeerGateway], cluster: Cluster, devchain: DevChain
) -> None:
    _, gw = paid
    session = gw.session()
    info = session.info
    assert info.address == bytes.fromhex(devchain.orchestrator.address[2:])
    assert info.HasField("ticket_params") and price_from_net(info.price_info) == PRICE
    assert info.ticket_params.expiration_params.creation_round == devchain.round
    before = _deposit(devchain, devchain.broadcaster.address)
    for seq in range(3):
        data = make_segment(320, 240, 30, 1.0, start=float(seq))
        result, renditions = gw.transcode(session, "paid", seq, data, LADDER, 1000)
        _check(result, renditions, LADDER)
        hashes = b"".join(keccak256(r) for r in renditions)
        assert recover(keccak256(hashes), result.data.sig) == info.address
    sent = sum(session.sent)
    assert sent > 0
    engine = create_engine(cluster.env["FARM_DATABASE_URL"])
    queue = TicketQueue(engine)
    waiting = queue.pending()
    assert len(waiting) == sent  # every ticket wins here, and each was kept before the work
    w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
    mine(w3, max(q.expiration_block for q in waiting) + 1 - w3.eth.block_number)
    cluster.spawn("worker", "--cpu", "--chain", "--concurrency", "1", log="chain-worker.log")
    cluster.start_beat()
    wait_for(lambda: not queue.pending(), timeout=120, what="the winners to be redeemed")
    assert queue.counts() == {"redeemed": sent}
    engine.dispose()
    redeemed = sum(q.ticket.face_value for q in waiting)
    assert before - _deposit(devchain, devchain.broadcaster.address) == redeemed


def test_bad_credentials_and_payments_are_refused_without_charge(
    paid: tuple[OrchestratorNode, LivepeerGateway], cluster: Cluster, devchain: DevChain
) -> None:
    _, gw = paid
    # GetOrchestrator signed by someone else.
    forged = gw.orchestrator_request()
    forged.sig = TicketSender("0x" + "42" * 32).signer.sign_hash(keccak256(b"anything"))
    with pytest.raises(grpc.RpcError) as refused:
        gw.get_orchestrator(forged)
    assert "orchestrator req sig check failed" in str(refused.value.details())

    session = gw.session()
    client = _redis(cluster)
    balances = Balances(client)
    sender = gw.address
    data = make_segment(320, 240, 30, 1.0)
    seg = gw.seg_data(session, "refused", 0, data, LADDER, 1000)

    def balance() -> object:
        return balances.get(sender, session.info.auth_token.session_id)

    # A segment signed by another key.
    other = net_pb2.SegData()
    other.CopyFrom(seg)
    other.sig = TicketSender("0x" + "42" * 32).signer.sign_hash(keccak256(b"x"))
    header, _ = gw.payment(session, price_from_net(session.info.price_info) * 100)
    r = gw.post_segment(session, other, data, payment=header)
    assert (r.status_code, r.text.strip()) == (403, "ErrSegSig")
    # No tickets and no balance.
    empty = pm_pb2.Payment(sender=sender)
    empty.expected_price.CopyFrom(session.info.price_info)
    r = gw.post_segment(
        session, seg, data, payment=base64.b64encode(empty.SerializeToString()).decode()
    )
    assert (r.status_code, r.text.strip()) == (400, "Insufficient balance")
    assert balance() == 0

    def tampered(**changes: bytes) -> str:
        message = pm_pb2.Payment()
        message.ParseFromString(base64.b64decode(header))
        for name, value in changes.items():
            setattr(message.ticket_params, name, value)
        return base64.b64encode(message.SerializeToString()).decode()

    params = session.info.ticket_params
    face = int.from_bytes(params.face_value, "big")
    for bad, text in [
        (tampered(face_value=uint_bytes(face * 2)), "invalid recipientRand"),
        (tampered(recipient=b"\x11" * 20), "invalid ticket recipient"),
    ]:
        r = gw.post_segment(session, seg, data, payment=bad)
        assert r.status_code == 400 and text in r.text, r.text
        assert balance() == 0
    # The intact payment is credited once; the same tickets again are a replay.
    r = gw.post_segment(session, seg, data, payment=header)
    assert r.status_code == 200, r.text
    assert net_pb2.TranscodeResult.FromString(r.content).WhichOneof("result") == "data"
    after = balance()
    r = gw.post_segment(session, seg, data, payment=header)
    assert r.status_code == 400 and "already seen" in r.text
    assert balance() == after
    # Params past their expiration block: go-livepeer credits them but answers the error.
    session.balance = Fraction(0)
    stale, count = gw.payment(session, price_from_net(session.info.price_info) * 10**6)
    w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
    mine(
        w3,
        int.from_bytes(session.info.ticket_params.expiration_block, "big")
        + 1
        - w3.eth.block_number,
    )
    assert count > 0
    r = gw.post_segment(session, seg, data, payment=stale)
    assert (r.status_code, r.text.strip()) == (400, "TicketParams expired")
    client.close()


def test_chain_reads_are_refreshed_behind_requests(devchain: DevChain) -> None:
    client = ChainClient(devchain.rpc_url, devchain.contracts["Controller"])
    cached = CachedChain(client, ttl_s=0.2)
    try:
        first = cached.last_seen_l1_block()
        w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
        mine(w3, 5)
        assert cached.last_seen_l1_block() == first  # within its time: no round trip
        # Past it, requests keep the old answer while one thread reads the new one.
        wait_for(lambda: cached.last_seen_l1_block() == first + 5, timeout=10, what="a refresh")
    finally:
        cached.close()


def _redis(cluster: Cluster):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(redis_py_url(cluster.settings.redis_registry_url()))
