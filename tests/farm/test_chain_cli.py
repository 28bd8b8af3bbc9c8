"""``farm chain``: the staking CLI against the contracts on anvil."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from farm.cli.chain import _fmt_status, parse_amount
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


def test_amounts_go_on_chain_exactly(env: Env) -> None:  # noqa: F811
    def bonded() -> int:
        delegator = env.client.call(
            env.c["BondingManager"].functions.getDelegator(env.chain.orchestrator.address)
        )
        return int(delegator[0])

    before = bonded()
    # 1.1 as a float is 1.1000000000000000888: 128 wei too many went on chain.
    assert farm_chain(env, "unbond", "1.1").returncode == 0
    assert before - bonded() == 11 * 10**17
    with_unit = farm_chain(env, "unbond", "0.5 LPT")
    assert with_unit.returncode == 0, with_unit.stderr
    assert before - bonded() == 16 * 10**17


def test_staking_cli_sends_nothing_the_contracts_would_refuse(env: Env) -> None:  # noqa: F811
    nonce = env.tx_count()
    orch = env.chain.orchestrator.address
    typo = orch[:-1] + "9"  # ...79C8 -> ...79C9, whose checksum differs
    wrong_case = orch[:2] + orch[2:].swapcase()
    for to, message in [
        ("0x1234", "is not an address"),
        ("", "is not an address"),
        ("zz" + orch[2:], "is not an address"),
        (wrong_case, "wrong EIP-55 checksum"),
        (typo, "wrong EIP-55 checksum"),
        ("0x" + "0" * 40, "zero address"),
    ]:
        done = farm_chain(env, "bond", "1", "--to", to)
        assert done.returncode == 1 and message in done.stderr, (to, done.stderr)
        assert "Traceback" not in done.stderr
    broke = farm_chain(env, "bond", "1e12")
    assert broke.returncode == 1 and "holds" in broke.stderr, broke.stderr
    over = farm_chain(env, "unbond", "1e9")
    assert over.returncode == 1 and "greater than bonded amount" in over.stderr, over.stderr
    lock = farm_chain(env, "rebond", "99")
    assert lock.returncode == 1 and "invalid unbonding lock ID" in lock.stderr, lock.stderr
    assert env.tx_count() == nonce  # no approve, no failed transaction paid for


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("nan", "is not an amount of LPT"),
        ("inf", "is not an amount of LPT"),
        ("1eth", "give LPT (or wei), not eth"),
        ("1e-19", "not a whole number of wei"),
        ("1e90", "too large"),
        ("\u0661\u0662", "is not an amount of LPT"),  # digits of another script
    ],
)
def test_malformed_amounts_are_usage_errors(tmp_path: Path, amount: str, message: str) -> None:
    # Refused while parsing, before the (missing) devchain file is read.
    done = run_farm_chain(tmp_path / "devchain.json", "bond", "--", amount)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "unit", "wei"),
    [
        ("1.1", "LPT", 11 * 10**17),
        ("2 lpt", "LPT", 2 * 10**18),
        ("1e-18", "ETH", 1),
        ("3 gwei", "ETH", 3 * 10**9),
        ("12345678901.123456789012345678", "LPT", 12345678901123456789012345678),
        ("100 wei", "LPT", 100),
    ],
)
def test_parse_amount_is_exact(text: str, unit: str, wei: int) -> None:
    assert parse_amount(text, unit) == wei


def test_a_bad_devchain_file_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"rpc_url": "http://127.0.0.1:1"}))
    for path, message in [
        (tmp_path / "missing.json", "cannot read devchain file"),
        (broken, "is not JSON"),
        (partial, "devchain has no 'orchestrator'"),
    ]:
        done = run_farm_chain(path, "status")
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_set_service_uri_and_status(env: Env) -> None:  # noqa: F811
    status = farm_chain(env, "status")
    assert status.returncode == 0, status.stderr
    assert "service URI" in status.stdout and "https://127.0.0.1:8935" in status.stdout
    done = farm_chain(env, "set-service-uri", "https://orch.example.com:8936")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("setServiceURI: ok (tx 0x"), done.stdout
    assert env.client.service_uri(env.orch) == "https://orch.example.com:8936"
    status = farm_chain(env, "status")
    (line,) = [s for s in status.stdout.splitlines() if s.startswith("service URI")]
    assert line.split()[-1] == "https://orch.example.com:8936"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://orch.example.com:8936", "gateways connect over https"),
        ("https://orch.example.com", "has no port"),
        ("https://orch.example.com:8936/segment", "no path, query or fragment"),
        ("https://orch.example.com:8936?a=b", "no path, query or fragment"),
        ("orch.example.com:8936", "gateways connect over https"),
        ("https://:8936", "has no host"),
    ],
)
def test_set_service_uri_refuses_a_bad_url(env: Env, url: str, message: str) -> None:  # noqa: F811
    nonce = env.tx_count()
    done = farm_chain(env, "set-service-uri", "--", url)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert env.tx_count() == nonce
    assert env.client.service_uri(env.orch) == "https://127.0.0.1:8935"


def test_status_prints_exact_amounts() -> None:
    # Floats printed with %g gave "1.00002e+06 LPT" and lost digits past the sixth.
    lines = _fmt_status(
        {
            "round": 7,
            "initialized": True,
            "block": 100,
            "gas_price_wei": 12_345,
            "account": "0xabc",
            "bonded_wei": 1_000_020 * 10**18 + 1,
            "delegate": "0xabc",
            "active": True,
            "reward_cut_percent": 5.0,
            "fee_share_percent": 40.0,
            "last_reward_round": 6,
            "pending_fees_wei": 123_456_789_012_345_678,
            "deposit_wei": 2 * 10**18,
            "reserve_wei": 10**18 // 8,
        }
    )
    assert lines["bonded"] == "1000020.000000000000000001 LPT to 0xabc"
    assert lines["pending fees"] == "0.123456789012345678 ETH"
    assert lines["deposit / reserve"] == "2 / 0.125 ETH"
    assert lines["gas price"] == "0.000012345 gwei"
