"""RewardService on a real anvil: once per round, also across restarts, retried on failure."""

from __future__ import annotations

import pytest

from chain.client import ChainClient
from chain.devchain import ANVIL_KEYS, mine
from chain.reward import RewardService
from tests.chain.test_client import Env, base, env

__all__ = ["base", "env"]  # the fixtures, imported for pytest

pytestmark = pytest.mark.timeout(120)


def _reward_round(env: Env) -> int:
    return env.client.transcoder_info(env.orch).last_reward_round


def test_once_per_round_and_across_restarts(env: Env) -> None:
    service = RewardService(env.client)
    stake = env.c["BondingManager"].functions.transcoderTotalStake(env.orch).call()
    result = service.run_once()
    assert result.startswith("rewarded: round "), result
    assert _reward_round(env) == env.chain.round
    assert env.c["BondingManager"].functions.transcoderTotalStake(env.orch).call() > stake

    nonce = env.tx_count()
    assert service.run_once().startswith("skipped: reward already called")
    # A restart: a new client and service in the same round read the chain, not memory.
    restarted = RewardService(
        ChainClient.from_devchain(env.json_path), env.chain.orchestrator.private_key
    )
    assert restarted.run_once().startswith("skipped: reward already called")
    assert env.tx_count() == nonce

    env.next_round()
    assert restarted.run_once().startswith(f"rewarded: round {env.chain.round + 1}")
    assert service.run_once().startswith("skipped: reward already called")
    assert _reward_round(env) == env.chain.round + 1


def test_waits_for_round_initialization(env: Env) -> None:
    mine(env.w3, env.chain.round_length + 1)
    service = RewardService(env.client)
    assert "is not initialized" in service.run_once()
    env.initialize_round()
    assert service.run_once().startswith("rewarded:")


def test_optional_round_initializer(env: Env) -> None:
    mine(env.w3, env.chain.round_length + 1)
    rounds = env.c["RoundsManager"]
    assert not rounds.functions.currentRoundInitialized().call()
    service = RewardService(env.client, initialize_rounds=True)
    nonce = env.tx_count()
    result = service.run_once()
    assert result.startswith("rewarded:"), result
    assert rounds.functions.currentRoundInitialized().call()
    assert _reward_round(env) == rounds.functions.currentRound().call()
    assert env.tx_count() == nonce + 2  # initializeRound and reward, both by the orchestrator


def test_failure_is_retried_within_the_round(env: Env) -> None:
    # Too little gas: the transaction is mined and fails; the round is not lost.
    starved = RewardService(env.client, gas_limit=60_000)
    assert starved.run_once().startswith("failed: reward in round")
    assert _reward_round(env) < env.chain.round
    assert RewardService(env.client).run_once().startswith("rewarded:")


def test_inactive_orchestrator_is_skipped(env: Env) -> None:
    service = RewardService(env.client, ANVIL_KEYS[3])
    result = service.run_once()
    assert result.startswith("skipped:") and "not an active transcoder" in result
    read_only = ChainClient(env.chain.rpc_url, env.chain.contracts["Controller"])
    with pytest.raises(ValueError):
        RewardService(read_only)
