"""The compiled contracts' ABIs and bytecode, from chain/contracts/artifacts/*.json.

The artifacts are committed, so loading them needs neither Node.js nor solc
(``python -m chain.compile`` regenerates them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from eth_utils.address import to_checksum_address

from chain.compile import ARTIFACTS_DIR, CONTRACTS
from chain.signing import keccak256
from chain.tickets import Ticket, parse_aux_data, recipient_rand_hash

__all__ = [
    "CONTRACTS",
    "Artifact",
    "TicketTuple",
    "abi",
    "contract_id",
    "load_artifact",
    "redeemed_ticket",
    "ticket_tuple",
]

#: The Ticket struct as web3 encodes it: (address,address,uint256,uint256,uint256,bytes32,bytes).
TicketTuple = tuple[str, str, int, int, int, bytes, bytes]

#: A JSON ABI: a list of function, event, error and constructor entries.
ABI = list[dict[str, Any]]

_ALIASES: Final = {"JobsManager": "TicketBroker"}


@dataclass(frozen=True, slots=True)
class Artifact:
    """One contract's compiler output."""

    name: str
    abi: ABI
    bytecode: str
    deployed_bytecode: str
    compiler_version: str


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of a contract in :data:`chain.compile.CONTRACTS` (by contract name)."""
    if name not in CONTRACTS:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(CONTRACTS)}")
    data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return Artifact(
        name=name,
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler_version=data["compiler"]["version"],
    )


def abi(name: str) -> ABI:
    """The ABI of a contract; ``JobsManager`` is TicketBroker, as the Controller registers."""
    return load_artifact(_ALIASES.get(name, name)).abi


def contract_id(name: str) -> bytes:
    """The Controller id of a contract name: keccak256 of the name's UTF-8 bytes."""
    return keccak256(name.encode())


def ticket_tuple(ticket: Ticket) -> TicketTuple:
    """A ticket as the TicketBroker's Ticket struct argument, with the checksummed addresses
    web3 requires (``Ticket.as_abi_tuple`` gives lowercase hex, which web3 refuses)."""
    recipient, sender, face_value, win_prob, nonce, rand_hash, aux_data = ticket.as_abi_tuple()
    return (
        to_checksum_address(recipient),
        to_checksum_address(sender),
        face_value,
        win_prob,
        nonce,
        rand_hash,
        aux_data,
    )


def redeemed_ticket(args: Mapping[str, Any]) -> Ticket | None:
    """The ticket a ``WinningTicketRedeemed`` event's arguments name; None for one the farm
    cannot have made (a nonce past uint32, odd auxData)."""
    try:
        creation_round, block_hash = parse_aux_data(bytes(args["auxData"]))
        return Ticket(
            recipient=bytes.fromhex(str(args["recipient"])[2:]),
            sender=bytes.fromhex(str(args["sender"])[2:]),
            face_value=int(args["faceValue"]),
            win_prob=int(args["winProb"]),
            sender_nonce=int(args["senderNonce"]),
            recipient_rand_hash=recipient_rand_hash(int(args["recipientRand"])),
            creation_round=creation_round,
            creation_round_block_hash=block_hash,
        )
    except ValueError:
        return None
