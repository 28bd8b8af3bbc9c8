"""The committed contract artifacts: the reference's selectors, events and Controller ids,
and a fresh compilation with the pinned npm solc that must reproduce them byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from chain.abi import abi, contract_id, load_artifact
from chain.compile import (
    CONTRACTS,
    CONTRACTS_DIR,
    CompileError,
    check_artifacts,
    compile_contracts,
    ensure_node_modules,
    pinned_version,
)
from chain.signing import keccak256
from tests.conftest import need_tool

# Selectors and topics from the payments reference (sections 1.9, 1.12, 3.1, 3.3, 3.5).
SELECTORS = {
    "TicketBroker": {
        "fundDeposit()": "6caa736b",
        "fundReserve()": "6f9c3c8f",
        "fundDepositAndReserve(uint256,uint256)": "511f4073",
        "fundDepositAndReserveFor(address,uint256,uint256)": "989f789c",
        "redeemWinningTicket((address,address,uint256,uint256,uint256,bytes32,bytes),bytes,uint256)": "ec8b3cb6",  # noqa: E501
        "batchRedeemWinningTickets((address,address,uint256,uint256,uint256,bytes32,bytes)[],bytes[],uint256[])": "d01b808e",  # noqa: E501
        "unlock()": "a69df4b5",
        "cancelUnlock()": "c2c4c2c8",
        "withdraw()": "3ccfd60b",
        "usedTickets(bytes32)": "59a515ba",
        "getTicketHash((address,address,uint256,uint256,uint256,bytes32,bytes))": "b03fa864",
        "getSenderInfo(address)": "e1a589da",
    },
    "BondingManager": {
        "reward()": "228cb733",
        "rewardWithHint(address,address)": "81871056",
    },
    "RoundsManager": {
        "currentRound()": "8a19c8bc",
        "currentRoundInitialized()": "219bc76c",
        "initializeRound()": "d4807fb2",
        "blockHashForRound(uint256)": "3aa4add4",
    },
    # orchestrator-protocol reference section 7.
    "ServiceRegistry": {
        "getServiceURI(address)": "214c2a4b",
        "setServiceURI(string)": "5f11301b",
    },
}

TOPICS = {
    "TicketBroker": {
        "DepositFunded(address,uint256)": "5159e237d952190e68d5215430f305831be7c9c8776d1377c76679ae4773413f",  # noqa: E501
        "ReserveFunded(address,uint256)": "b52b99b9e83551fcbd069b559cc3e823e2a1a3bad8ece46561ea77524394c850",  # noqa: E501
        "ReserveClaimed(address,address,uint256)": "5c2b394723f408a40a60335e24b71829642e35f350cebe2036a96a66e895ea98",  # noqa: E501
        "WinningTicketRedeemed(address,address,uint256,uint256,uint256,uint256,bytes)": "c389eb51ed006dbf2528507f010efdf5225ea596e1e1741d74f550dab1925ee7",  # noqa: E501
        "WinningTicketTransfer(address,address,uint256)": "8b87351a208c06e3ceee59d80725fd77a23b4129e1b51ca231fc89b40712649c",  # noqa: E501
        "Unlock(address,uint256,uint256)": "f7870c5b224cbc19873599e46ccfc7103934650509b1af0c3ce90138377c2004",  # noqa: E501
        "UnlockCancelled(address)": "fa044b7b93a40365dc68049797c2eb06918523d694e5d56e406cac3eb35578e5",  # noqa: E501
        "Withdrawal(address,uint256,uint256)": "df273cb619d95419a9cd0ec88123a0538c85064229baa6363788f743fff90deb",  # noqa: E501
    },
    "BondingManager": {
        "Reward(address,uint256)": "619caafabdd75649b302ba8419e48cccf64f37f1983ac4727cfb38b57703ffc9",  # noqa: E501
    },
    "RoundsManager": {
        "NewRound(uint256,bytes32)": "22f2fc17c5daf07db2379b3a03a8ef20a183f761097a58fce219c8a14619e786",  # noqa: E501
    },
    "ServiceRegistry": {
        "ServiceURIUpdate(address,string)": "fbb63068732c85741c9f8e61caffaabe038d577bfafd2d2dcc0e352a4f653a4c",  # noqa: E501
    },
}

CONTROLLER_IDS = {
    "BondingManager": "2517d59a36a86548e38734e8ab416f42afff4bca78706a66ad65750dae7f9e37",
    "TicketBroker": "bd1aa3e8d2464256d7fd3dcf645c16418d5d8c51d971f1ad7d57e7b1b5eee239",
    "JobsManager": "3d7456535a3155a46f15a2313c3915bd07137ffdc56464f4fc9a82bae7215c2d",
    "RoundsManager": "e8438ea868df48e3fc21f2f087b993c9b1837dc0f6135064161ce7d7a1701fe8",
    "Minter": "6e58ad548d72b425ea94c15f453bf26caddb061d82b2551db7fdd3cefe0e9940",
    "LivepeerToken": "3443e257065fe41dd0e4d1f5a1b73a22a62e300962b57f30cddf41d0f8273ba7",
    "ServiceRegistry": "79c5d2a4a07754f4bacb0ffba18ac516030ee589ebc89db8627680c4d4cdb230",
}

# Functions the project calls, with their full ABI types (reference 1.9, 3.1, 3.2, 3.5).
REQUIRED = {
    "TicketBroker": [
        "claimableReserve(address,address)",
        "claimedReserve(address,address)",
        "getReserveInfo(address)",
        "isUnlockInProgress(address)",
        "unlockPeriod()",
        "ticketValidityPeriod()",
    ],
    "BondingManager": [
        "bond(uint256,address)",
        "unbond(uint256)",
        "rebond(uint256)",
        "withdrawStake(uint256)",
        "withdrawFees(address,uint256)",
        "claimEarnings(uint256)",
        "transcoder(uint256,uint256)",
        "getTranscoder(address)",
        "getDelegator(address)",
        "isActiveTranscoder(address)",
        "isRegisteredTranscoder(address)",
        "transcoderTotalStake(address)",
        "getTotalBonded()",
        "getTranscoderPoolSize()",
        "updateTranscoderWithFees(address,uint256,uint256)",
    ],
    "RoundsManager": [
        "roundLength()",
        "lastInitializedRound()",
        "currentRoundStartBlock()",
        "currentRoundLocked()",
        "blockNum()",
    ],
    "Controller": [
        "setContractInfo(bytes32,address,bytes20)",
        "getContract(bytes32)",
        "unpause()",
    ],
}


def _type(item: dict[str, Any]) -> str:
    kind: str = item["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in item["components"]) + ")" + kind[len("tuple") :]
    return kind


def _signatures(name: str, kind: str) -> set[str]:
    return {
        f"{e['name']}({','.join(_type(i) for i in e['inputs'])})"
        for e in abi(name)
        if e["type"] == kind
    }


@pytest.mark.parametrize("name", CONTRACTS)
def test_artifact_is_complete(name: str) -> None:
    artifact = load_artifact(name)
    assert artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 100
    assert artifact.deployed_bytecode.startswith("0x") and len(artifact.deployed_bytecode) > 100
    assert artifact.compiler_version.startswith(pinned_version("solc") + "+")


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_function_selectors_match_reference(name: str) -> None:
    signatures = _signatures(name, "function")
    for signature, selector in SELECTORS[name].items():
        assert signature in signatures
        assert keccak256(signature.encode())[:4].hex() == selector


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_event_topics_match_reference(name: str) -> None:
    signatures = _signatures(name, "event")
    for signature, topic in TOPICS[name].items():
        assert signature in signatures
        assert keccak256(signature.encode()).hex() == topic


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_functions_exist(name: str) -> None:
    assert set(REQUIRED[name]) <= _signatures(name, "function")


def test_get_sender_info_shape() -> None:
    (entry,) = [e for e in abi("TicketBroker") if e.get("name") == "getSenderInfo"]
    outputs = [(o["name"], _type(o)) for o in entry["outputs"]]
    assert outputs == [("sender", "(uint256,uint256)"), ("reserve", "(uint256,uint256)")]
    fields = [[c["name"] for c in o["components"]] for o in entry["outputs"]]
    assert fields == [["deposit", "withdrawRound"], ["fundsRemaining", "claimedInCurrentRound"]]


def test_get_transcoder_and_delegator_shapes() -> None:
    entries = {e["name"]: e for e in abi("BondingManager") if e["type"] == "function"}
    transcoder = [o["name"] for o in entries["getTranscoder"]["outputs"]]
    assert transcoder == [
        "lastRewardRound",
        "rewardCut",
        "feeShare",
        "lastActiveStakeUpdateRound",
        "activationRound",
        "deactivationRound",
        "activeCumulativeRewards",
        "cumulativeRewards",
        "cumulativeFees",
        "lastFeeRound",
    ]
    delegator = [(o["name"], o["type"]) for o in entries["getDelegator"]["outputs"]]
    assert delegator == [
        ("bondedAmount", "uint256"),
        ("fees", "uint256"),
        ("delegateAddress", "address"),
        ("delegatedAmount", "uint256"),
        ("startRound", "uint256"),
        ("lastClaimRound", "uint256"),
        ("nextUnbondingLockId", "uint256"),
    ]


def test_controller_ids_match_reference() -> None:
    for name, expected in CONTROLLER_IDS.items():
        assert contract_id(name).hex() == expected
    assert abi("JobsManager") == abi("TicketBroker")


def test_npm_versions_are_pinned_exactly() -> None:
    manifest = json.loads((CONTRACTS_DIR / "package.json").read_text())
    lock = json.loads((CONTRACTS_DIR / "package-lock.json").read_text())
    for package, version in manifest["devDependencies"].items():
        assert version[0].isdigit(), f"{package} must be pinned to an exact version"
        assert lock["packages"][f"node_modules/{package}"]["version"] == version


def test_recompilation_reproduces_committed_artifacts() -> None:
    """Compile with the pinned npm solc and compare ABI, bytecode and compiler."""
    need_tool("node", hint="Node.js recompiles the contracts with the pinned npm solc")
    try:
        ensure_node_modules()
    except (CompileError, OSError, subprocess.SubprocessError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"recompiling needs npm ci --prefix chain/contracts in CI: {e}")
        pytest.skip(f"pinned solc could not be installed: {e}")
    assert check_artifacts(compile_contracts()) == []
