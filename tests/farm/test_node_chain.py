"""The node API's /chain routes: ``farm chain``'s operations for remote use, on anvil."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.chain.test_client import Env, base, env  # noqa: F401 - fixtures
from tests.farm.harness import Cluster, cluster_env
from tests.farm.test_services import start_node

TOKEN = "node-admin-token"


def test_staking_over_the_node_api(
    env: Env,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    redis_url: str,
    sqlite_url: str,
) -> None:
    env.next_round()  # a round the orchestrator has not rewarded yet
    variables = cluster_env(tmp_path, redis_url, sqlite_url)
    off_chain = Cluster(tmp_path, dict(variables))
    variables.update(
        FARM_ETH_RPC_URL=env.chain.rpc_url,
        FARM_ETH_CONTROLLER=env.chain.contracts["Controller"],
        FARM_ETH_PRIVATE_KEY=env.chain.orchestrator.private_key,
        FARM_ADMIN_TOKEN=TOKEN,
    )
    cluster = Cluster(tmp_path, variables)
    try:
        node = start_node(cluster)
        admin = {"Authorization": f"Bearer {TOKEN}"}

        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.get(f"{node}/chain/status", headers=headers, timeout=30)
            assert r.status_code == 401 and r.json() == {
                "error": {"message": "admin token required"}
            }
        nonce = env.tx_count()
        r = httpx.post(f"{node}/chain/config", json={"reward_cut": 7}, timeout=30)
        assert r.status_code == 401  # the token is checked before anything is sent
        assert env.tx_count() == nonce

        status = httpx.get(f"{node}/chain/status", headers=admin, timeout=30).json()
        assert status["account"] == env.chain.orchestrator.address.lower()
        assert status["active"] is True and status["initialized"] is True

        # Livepeer refuses new terms from an active orchestrator before its reward call.
        early = httpx.post(
            f"{node}/chain/config",
            json={"reward_cut": 7, "fee_share": 30},
            headers=admin,
            timeout=60,
        )
        assert early.status_code == 409 and "reward" in early.json()["error"]["message"]
        reward = httpx.post(f"{node}/chain/reward", headers=admin, timeout=60)
        assert reward.status_code == 200 and reward.json()["result"].startswith("rewarded")
        r = httpx.post(
            f"{node}/chain/config",
            json={"reward_cut": 7, "fee_share": 30},
            headers=admin,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        (tx,) = r.json()["transactions"]
        assert tx["op"] == "transcoder" and tx["tx"].startswith("0x") and tx["gas_used"] > 0
        info = env.client.transcoder_info(env.orch)
        assert (info.reward_cut, info.fee_share) == (70_000, 300_000)

        # A malformed body is refused by validation; the contract's refusal is a 409 that
        # names the revert reason; nothing was unlocked, so withdraw reverts.
        bad = httpx.post(f"{node}/chain/unbond", json={"amount_wei": 0}, headers=admin, timeout=30)
        assert bad.status_code == 422
        refused = httpx.post(f"{node}/chain/withdraw", headers=admin, timeout=60)
        assert refused.status_code == 409 and "reverted" in refused.json()["error"]["message"]
        assert env.tx_count() == nonce + 2  # reward and config: the refused one was not sent

        def bonded() -> int:
            return int(
                httpx.get(f"{node}/chain/status", headers=admin, timeout=30).json()["bonded_wei"]
            )

        unbond = httpx.post(
            f"{node}/chain/unbond", json={"amount_wei": 10**18}, headers=admin, timeout=60
        )
        assert unbond.status_code == 200, unbond.text
        unbonded = bonded()  # the reward was claimed into the stake on the way
        rebond = httpx.post(f"{node}/chain/rebond", json={"lock_id": 0}, headers=admin, timeout=60)
        assert rebond.status_code == 200, rebond.text
        assert bonded() == unbonded + 10**18
    finally:
        cluster.stop()

    try:
        node = start_node(off_chain)
        r = httpx.get(
            f"{node}/chain/round", headers={"Authorization": "Bearer farm-dev-secret"}, timeout=30
        )
        assert r.status_code == 503 and "off-chain" in r.json()["error"]["message"]
    finally:
        off_chain.stop()


def test_service_uri_over_the_node_api(
    env: Env,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    redis_url: str,
    sqlite_url: str,
) -> None:
    variables = cluster_env(tmp_path, redis_url, sqlite_url)
    variables.update(
        FARM_ETH_RPC_URL=env.chain.rpc_url,
        FARM_ETH_CONTROLLER=env.chain.contracts["Controller"],
        FARM_ETH_PRIVATE_KEY=env.chain.orchestrator.private_key,
        FARM_ADMIN_TOKEN=TOKEN,
    )
    cluster = Cluster(tmp_path, variables)
    try:
        node = start_node(cluster)
        admin = {"Authorization": f"Bearer {TOKEN}"}
        status = httpx.get(f"{node}/chain/status", headers=admin, timeout=30).json()
        assert status["service_uri"] == "https://127.0.0.1:8935"

        nonce = env.tx_count()
        uri = {"uri": "https://orch.example.com:8936"}
        r = httpx.post(f"{node}/chain/service-uri", json=uri, timeout=30)
        assert r.status_code == 401
        for bad, message in [
            ("http://orch.example.com:8936", "gateways connect over https"),
            ("https://orch.example.com:8936/", "no path, query or fragment"),
            ("https://orch.example.com", "has no port"),
        ]:
            r = httpx.post(
                f"{node}/chain/service-uri", json={"uri": bad}, headers=admin, timeout=30
            )
            assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
        malformed = httpx.post(f"{node}/chain/service-uri", json={}, headers=admin, timeout=30)
        assert malformed.status_code == 422
        assert env.tx_count() == nonce

        r = httpx.post(f"{node}/chain/service-uri", json=uri, headers=admin, timeout=60)
        assert r.status_code == 200, r.text
        (tx,) = r.json()["transactions"]
        assert tx["op"] == "setServiceURI" and tx["tx"].startswith("0x")
        assert env.client.service_uri(env.orch) == uri["uri"]
        status = httpx.get(f"{node}/chain/status", headers=admin, timeout=30).json()
        assert status["service_uri"] == uri["uri"]
    finally:
        cluster.stop()
