"""The gateway paying a network orchestrator from its own deposit, on the development chain.

anvil with the development contracts: the node's key is the bonded orchestrator's and the
gateway's sender key the funded broadcaster's. Every ticket wins (the node caps the face value
at the ticket's expected value), so the deposit's decrease can be checked to the wei against
what the node redeemed.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine
from web3 import Web3

from chain.client import ChainClient
from chain.devchain import ANVIL_KEYS, DevAccount, DevChain, bootstrap, mine
from chain.queue import TicketQueue
from farm.embedded import EmbeddedRedis
from farm.media.synth import make_segment
from farm.protocol import FetchPolicy
from gateway.livepeer.discovery import discover
from tests.conftest import PG_URL
from tests.farm.harness import Cluster, cluster_env, wait_for
from tests.farm.test_orchestrator import OrchestratorNode
from tests.farm.test_orchestrator_chain import _deposit, chain_env
from tests.farm.test_orchestrator_chain import devchain as devchain
from tests.gateway.conftest import Env, Gateway
from tests.gateway.test_livepeer import CONFIG, PIXELS, LyingFront, check_renditions


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    yield c
    c.stop()


@pytest.fixture
def gateway_env(tmp_path: Path, redis_url: str) -> Iterator[Env]:
    schema = f"g_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    env = Env(tmp_path / "gw", [int(redis_url.rsplit("/", 1)[1])], [schema])
    env.home.mkdir()
    try:
        yield env
    finally:
        for g in env.gateways:
            if g.poll() is None:
                g.terminate()
                g.wait(timeout=15)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def _paying_gateway(
    cluster: Cluster,
    devchain: DevChain,
    gateway_env: Env,
    lie: str | None = None,
    worker: tuple[str, ...] = (),
    **env: str,
) -> tuple[OrchestratorNode, Gateway, LyingFront | None]:
    """A paid node on the chain (its worker started with ``worker``), and a gateway paying it
    from the broadcaster's deposit (through a lying front, with ``lie``)."""
    cluster.env.update(chain_env(devchain))
    cluster.env["FARM_CHAIN_CACHE_S"] = "0"
    cluster.env["FARM_AI_PROBE_S"] = "0.3"
    cluster.start_worker(*worker)
    node = OrchestratorNode(cluster)
    front = LyingFront(node, cluster.home, lie) if lie else None
    entry = {
        "kind": "livepeer",
        "name": "onchain",
        "address": front.url if front else node.url,
        "price_per_unit": 1,
    }
    gw = gateway_env.gateway(
        FARM_ORCHESTRATORS=json.dumps([entry]),
        FARM_ETH_RPC_URL=devchain.rpc_url,
        FARM_ETH_CONTROLLER=devchain.contracts["Controller"],
        FARM_ETH_SENDER_KEY=devchain.broadcaster.private_key.removeprefix("0x"),
        FARM_ESTIMATE_MARGIN="0",
        # The node's tickets always win (face value = EV): worth more than go-livepeer's cap.
        FARM_MAX_TICKET_EV_WEI=str(10**16),
        expect_unhealthy=True,
        **env,
    )
    wait_for(
        lambda: gw.admin("GET", "/admin/orchestrators").json()[0]["healthy"],
        timeout=30,
        what=f"the orchestrator healthy: {gw.admin('GET', '/admin/orchestrators').json()}",
    )
    return node, gw, front


def _post(gw: Gateway, key: str, stream: str, seq: int) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/live/{stream}/{seq}.ts",
        content=make_segment(320, 240, 30, 1.0, start=float(seq)),
        headers={
            "Content-Duration": "1000",
            "Livepeer-Transcode-Configuration": CONFIG,
            "Authorization": f"Bearer {key}",
            "Accept": "multipart/mixed",
        },
        timeout=120,
    )


def test_the_gateways_deposit_pays_what_the_node_redeems(
    cluster: Cluster,
    devchain: DevChain,
    gateway_env: Env,
) -> None:
    node, gw, _ = _paying_gateway(cluster, devchain, gateway_env)
    key_id, key = gw.key(credits=100 * PIXELS)
    before = _deposit(devchain, devchain.broadcaster.address)
    for seq in range(3):
        assert check_renditions(_post(gw, key, "paid", seq)) == PIXELS
    # The caller is charged at the gateway's own price; the orchestrator was paid in tickets.
    assert gw.balance(key_id) == 97 * PIXELS
    redeemed = _redeemed_all(cluster, devchain)
    assert before - _deposit(devchain, devchain.broadcaster.address) == redeemed
    node.close()


def _redeemed_all(cluster: Cluster, devchain: DevChain) -> int:
    """Mine past the tickets' expiration blocks, run the chain worker and beat until every
    ticket waiting is redeemed; their face value."""
    engine = create_engine(cluster.env["FARM_DATABASE_URL"])
    try:
        queue = TicketQueue(engine)
        waiting = queue.pending()
        assert waiting, "the gateway sent no tickets"
        assert {q.ticket.sender for q in waiting} == {
            bytes.fromhex(devchain.broadcaster.address.removeprefix("0x"))
        }
        w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
        mine(w3, max(q.expiration_block for q in waiting) + 1 - w3.eth.block_number)
        # Mining may have entered a round nobody initialized yet (an earlier test mined too):
        # the reward task initializes it, as an orchestrator's node does with the setting on.
        cluster.env.update({"FARM_INITIALIZE_ROUNDS": "true", "FARM_REWARD_INTERVAL_S": "1"})
        cluster.spawn("worker", "--cpu", "--chain", "--concurrency", "1", log="chain-worker.log")
        cluster.start_beat()
        wait_for(lambda: not queue.pending(), timeout=120, what="the winners to be redeemed")
        assert queue.counts() == {"redeemed": len(waiting)}
    finally:
        engine.dispose()
    return sum(q.ticket.face_value for q in waiting)


def test_the_gateways_deposit_pays_for_ai_what_the_node_redeems(
    cluster: Cluster,
    devchain: DevChain,
    gateway_env: Env,
) -> None:
    model = {
        "pipeline": "llm",
        "model_id": "farm/echo",
        "warm": True,
        "price_per_unit": 3,
        "pixels_per_unit": 1,
    }
    node, gw, _ = _paying_gateway(
        cluster,
        devchain,
        gateway_env,
        worker=("--ai-models", json.dumps([model])),
        FARM_AI_PRICE_PER_UNIT="1",
        FARM_RATE_BURST="1000",
        FARM_RATE_LIMIT_PER_MINUTE="60000",
    )
    try:
        key_id, key = gw.key(credits=10**6)
        before = _deposit(devchain, devchain.broadcaster.address)
        for words in ("paid in tickets", "on the network"):
            r = httpx.post(
                f"{gw.url}/llm",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": "farm/echo",
                    "messages": [{"role": "user", "content": words}],
                    "stream": False,
                    "max_tokens": 8,
                },
                timeout=60,
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == words
        # The caller pays the gateway's price; the orchestrator was paid in tickets.
        assert gw.balance(key_id) == 10**6 - 2 * 8
        redeemed = _redeemed_all(cluster, devchain)
        assert before - _deposit(devchain, devchain.broadcaster.address) == redeemed
    finally:
        node.close()


def test_a_result_signed_by_another_key_is_caught_and_suspends(
    cluster: Cluster,
    devchain: DevChain,
    gateway_env: Env,
) -> None:
    node, gw, front = _paying_gateway(cluster, devchain, gateway_env, lie="signature")
    assert front is not None
    try:
        key_id, key = gw.key(credits=100 * PIXELS)
        r = _post(gw, key, "forged", 0)
        assert r.status_code == 503, r.text
        attempt = gw.admin("GET", f"/admin/sessions/{key_id}:forged").json()["attempts"][0]
        assert attempt["error_code"] == "result_invalid", attempt
        assert "signature" in attempt["error"]
        assert gw.admin("GET", "/admin/orchestrators").json()[0]["suspended"] is True
        assert gw.balance(key_id) == 100 * PIXELS  # nothing delivered, nothing charged
    finally:
        front.close()
        node.close()


def test_orchestrators_bonded_on_chain_are_found_and_used(
    cluster: Cluster,
    devchain: DevChain,
    gateway_env: Env,
    tmp_path: Path,
) -> None:
    # A second orchestrator bonds and advertises itself; each runs a node of its own.
    w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
    second = bootstrap(
        w3,
        addresses=devchain.contracts,
        orchestrator=DevAccount.from_key(ANVIL_KEYS[3]),
        broadcaster=devchain.broadcaster,
    )
    redis_server = EmbeddedRedis(tmp_path / "redis-2", persist=False)
    redis_server.start()
    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    (tmp_path / "orch-2").mkdir()
    other = Cluster(
        tmp_path / "orch-2",
        cluster_env(
            tmp_path / "orch-2", redis_server.url, f"{PG_URL}?options=-csearch_path%3D{schema}"
        ),
    )
    nodes: dict[str, OrchestratorNode] = {}
    try:
        for c, chain in ((cluster, devchain), (other, second)):
            c.env.update(chain_env(chain))
            c.env["FARM_CHAIN_CACHE_S"] = "0"
            c.start_worker()
            node = OrchestratorNode(c)
            assert chain.orchestrator is not None
            owner = ChainClient(
                devchain.rpc_url,
                devchain.contracts["Controller"],
                private_key=bytes.fromhex(chain.orchestrator.private_key.removeprefix("0x")),
            )
            owner.set_service_uri(node.url)
            nodes[f"chain-{chain.orchestrator.address[2:].lower()[:12]}"] = node
        gw = gateway_env.gateway(
            FARM_ORCHESTRATORS="[]",
            FARM_LIVEPEER_DISCOVERY="true",
            FARM_DISCOVERY_PRICE_PER_UNIT="1",
            FARM_ETH_RPC_URL=devchain.rpc_url,
            FARM_ETH_CONTROLLER=devchain.contracts["Controller"],
            FARM_ETH_SENDER_KEY=devchain.broadcaster.private_key.removeprefix("0x"),
            FARM_MAX_TICKET_EV_WEI=str(10**16),
            FARM_ESTIMATE_MARGIN="0",
            # The nodes are on loopback: the operator's own network, allowed here. (Found on
            # chain, such an address is left out otherwise: test_livepeer_parts.)
            FARM_FETCH_ALLOW="127.0.0.1/32",
            expect_unhealthy=True,
        )

        def found() -> set[str]:
            state = gw.admin("GET", "/admin/orchestrators").json()
            return {o["name"] for o in state if o["healthy"]}

        wait_for(lambda: found() == set(nodes), timeout=30, what=f"both found: {found()}")
        # Without the allow list, service URIs on the gateway's own network are left out.
        reads = ChainClient(devchain.rpc_url, devchain.contracts["Controller"])
        assert discover(reads, policy=FetchPolicy.parse(["127.0.0.1/32"])).keys() == nodes.keys()
        assert discover(reads) == {}
        key_id, key = gw.key(credits=100 * PIXELS)
        first = _post(gw, key, "found", 0)
        assert check_renditions(first) == PIXELS
        served = first.headers["Livepeer-Orchestrator"]
        # The one serving the stream goes away: the stream goes on at the other one.
        victim = nodes[served]
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=15)
        then = _post(gw, key, "found", 1)
        assert check_renditions(then) == PIXELS
        assert then.headers["Livepeer-Orchestrator"] in set(nodes) - {served}
        assert gw.balance(key_id) == 98 * PIXELS
    finally:
        for node in nodes.values():
            node.close()
        other.stop()
        redis_server.stop()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()
