"""``farm chain``: the staking CLI against the contracts on anvil."""

from __future__ import annotations

import subprocess

from tests.chain.test_client import Env, base, env  # noqa: F401 - fixtures
from tests.farm.harness import farm_chain as run_farm_chain


def farm_chain(
    env: Env,  # noqa: F811 - the fixture's type, not the fixture
    *args: str,
    role: str = "orchestrator",
) -> subprocess.CompletedProcess[str]:
    return run_farm_chain(env.json_path, *args, role=role)


def test_staking_cli(env: Env) -> None:  # noqa: F811
    env.next_round()
    status = farm_chain(env, "status")
    assert status.returncode == 0, status.stderr
    assert "orchestrator" in status.stdout and "active" in status.stdout
    reward = farm_chain(env, "reward")
    assert reward.returncode == 0 and reward.stdout.startswith("rewarded"), reward.stdout
    again = farm_chain(env, "reward")
    assert again.stdout.startswith("skipped"), again.stdout  # once per round
    config = farm_chain(env, "config", "--reward-cut", "5", "--fee-share", "40")
    assert config.returncode == 0, config.stderr
    info = env.client.transcoder_info(env.orch)
    assert (info.reward_cut, info.fee_share) == (50_000, 400_000)

    def bonded() -> int:
        delegator = env.client.call(
            env.c["BondingManager"].functions.getDelegator(env.chain.orchestrator.address)
        )
        return int(delegator[0])

    stake = bonded()
    assert farm_chain(env, "bond", "2").returncode == 0
    with_bond = bonded()
    assert with_bond - stake >= 2 * 10**18  # plus the reward claimed into the stake
    assert farm_chain(env, "unbond", "1").returncode == 0
    assert bonded() == with_bond - 10**18
    assert farm_chain(env, "rebond", "0").returncode == 0
    assert bonded() == with_bond
    before = env.client.sender_info(env.sender).deposit
    deposit = farm_chain(env, "deposit", "0.5", "0.25", role="broadcaster")
    assert deposit.returncode == 0, deposit.stderr
    assert env.client.sender_info(env.sender).deposit - before == 5 * 10**17
    reserve = farm_chain(env, "reserve", "0.125", role="broadcaster")
    assert reserve.returncode == 0, reserve.stderr
    assert env.client.sender_info(env.sender).reserve == env.chain.params.reserve + 375 * 10**15
    refused = farm_chain(env, "withdraw", role="broadcaster")  # nothing unlocked yet
    assert refused.returncode == 1 and "withdraw failed" in refused.stderr


def test_staking_cli_refuses_bad_arguments(env: Env) -> None:  # noqa: F811
    nonce = env.tx_count()
    half = farm_chain(env, "config", "--reward-cut", "5")
    assert half.returncode == 2 and "go together" in half.stderr
    over = farm_chain(env, "config", "--reward-cut", "150", "--fee-share", "10")
    assert over.returncode == 1 and "within 0-100" in over.stderr
    nothing = farm_chain(env, "unbond", "0")
    assert nothing.returncode == 1 and "must be positive" in nothing.stderr
    assert env.tx_count() == nonce
