"""Ticket layout, hash, signature and win check against go-livepeer's published vectors."""

from __future__ import annotations

from fractions import Fraction

import pytest
from eth_abi.packed import encode_packed
from eth_account import Account
from eth_account.messages import encode_defunct

from chain.errors import InvalidAuxData, InvalidSignature
from chain.signing import (
    HAS_COINCURVE,
    SECP256K1_N,
    Signer,
    check_signature,
    keccak256,
    recover,
    recover_coincurve,
    recover_eth_keys,
)
from chain.tickets import (
    MAX_WIN_PROB,
    ZERO_ADDRESS,
    ZERO_HASH,
    Ticket,
    address,
    expected_value,
    is_winning,
    parse_aux_data,
    recipient_rand_hash,
)
from tests.chain.conftest import SENDER_KEY

RAND_HASH = bytes.fromhex("41b1a0649752af1b28b3dc29a1556eee781e4a4c3a1f7f53f90fa834de098c4d")

# pm/ticket_test.go TestHash (payments.md 2.2): unlisted fields are zero, auxData empty.
HASH_VECTORS = [
    (
        {"sender_nonce": 4294967295},
        "e1393fc7f6de093780674022f96cb8e3872235167d037c04d554e58c0e63d280",
    ),
    ({"sender_nonce": 1}, "ce0918ba94518293e9712effbe5fca4f1f431089833a5b8c257cb1e024595f68"),
    (
        {"face_value": 1, "win_prob": 500},
        "87ef13f2d37e4d5352a01d3c77b8179d80e0887f1953bfabfd0bfd7b0f689ddd",
    ),
    (
        {"face_value": 500, "win_prob": 1},
        "aa4b35071043587992ac8b9dd1b2cf1d8311130e6458cf0b2342484e21af5f5b",
    ),
    (
        {"recipient": address("0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F")},
        "81e353ae39046e2b77b9f996abbaeed527fda559b61ef90f299c4499dd508ccc",
    ),
    (
        {"recipient_rand_hash": RAND_HASH},
        "be5eaf9a49a39540b9bb02f1a21904f61324a29819e2c032824bfaa10c100b17",
    ),
    (
        {"creation_round": 10, "creation_round_block_hash": RAND_HASH},
        "e502907c16036ab3d11b78c5a2e93c20f3d6415c67f91de4ed01348182b3b2e2",
    ),
]

# crypto/verify_test.go (payments.md 2.3).
SIG_ADDRESS = address("0x3BadDb1eeE2105893136A3F96c8a963E9C6309d6")
SIG_MESSAGE = bytes.fromhex("b7da355477356fc4c47fcabcf232dc77a6db9b07b7e48b76261cc55cc8fbabb3")
SIG = bytes.fromhex(
    "206443228e8f784bc3a122de0d85eb3ebff82d6a79cca26c7eeb907099a6404f"
    "6dff57bc6828f28bd6cd073c89d94cf3364204679ed8365fa45b5ee6af19a9841c"
)

RECOVERERS = [
    pytest.param(
        recover_coincurve,
        id="coincurve",
        marks=pytest.mark.skipif(not HAS_COINCURVE, reason="coincurve is not installed"),
    ),
    pytest.param(recover_eth_keys, id="eth_keys"),
]


def zero_ticket(**fields: object) -> Ticket:
    base: dict[str, object] = {
        "recipient": ZERO_ADDRESS,
        "sender": ZERO_ADDRESS,
        "face_value": 0,
        "win_prob": 0,
        "sender_nonce": 0,
        "recipient_rand_hash": ZERO_HASH,
    }
    base.update(fields)
    return Ticket(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "expected"), HASH_VECTORS)
def test_hash_matches_go_livepeer_vectors(fields: dict[str, object], expected: str) -> None:
    assert zero_ticket(**fields).hash().hex() == expected


def test_packed_layout_is_abi_encode_packed() -> None:
    ticket = Ticket(
        recipient=address("0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F"),
        sender=SIG_ADDRESS,
        face_value=10**18,
        win_prob=2**200 + 3,
        sender_nonce=42,
        recipient_rand_hash=RAND_HASH,
        creation_round=3000,
        creation_round_block_hash=SIG_MESSAGE,
    )
    expected = encode_packed(
        ["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"],
        list(ticket.as_abi_tuple()),
    )
    assert ticket.packed() == expected
    assert len(ticket.packed()) == 20 + 20 + 32 * 4 + 64
    assert ticket.hash() == keccak256(expected)


def test_aux_data_vector() -> None:
    block_hash = bytes.fromhex("7624778dedc75f8b322b9fa1632a610d40b85e106c7d9bf0e743a9ce291b9c6f")
    ticket = zero_ticket(creation_round=5, creation_round_block_hash=block_hash)
    assert ticket.aux_data == bytes(31) + b"\x05" + block_hash
    assert parse_aux_data(ticket.aux_data) == (5, block_hash)


def test_aux_data_is_empty_for_round_zero_and_zero_hash() -> None:
    assert zero_ticket().aux_data == b""
    assert parse_aux_data(b"") == (0, ZERO_HASH)
    # One of the two set is enough to encode both.
    assert len(zero_ticket(creation_round=1).aux_data) == 64


def test_parse_aux_data_refuses_other_lengths() -> None:
    with pytest.raises(InvalidAuxData, match="must be 64 bytes"):
        parse_aux_data(bytes(63))


@pytest.mark.parametrize(
    "fields",
    [
        {"recipient": bytes(19)},
        {"recipient_rand_hash": bytes(31)},
        {"face_value": -1},
        {"win_prob": 2**256},
        {"sender_nonce": 2**32},
    ],
)
def test_ticket_refuses_out_of_range_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        zero_ticket(**fields)


@pytest.mark.parametrize("recover", RECOVERERS)
def test_signature_vector_recovers_its_address(recover: object) -> None:
    assert recover(SIG_MESSAGE, SIG) == SIG_ADDRESS  # type: ignore[operator]


@pytest.mark.parametrize("recover", RECOVERERS)
@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        (SIG[:64], "65 bytes"),
        (SIG + b"\x00", "65 bytes"),
        (SIG[:64] + b"\x01", "27 or 28"),
        (SIG[:64] + b"\x1d", "27 or 28"),
        # The same signature with s flipped to n - s (and v to match) is valid ECDSA but
        # malleable; TicketBroker and VerifySig refuse it.
        (
            SIG[:32]
            + (SECP256K1_N - int.from_bytes(SIG[32:64], "big")).to_bytes(32, "big")
            + b"\x1b",
            "upper half",
        ),
        (bytes(64) + b"\x1b", "out of range"),
    ],
)
def test_malformed_signatures_are_refused(recover: object, sig: bytes, reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        recover(SIG_MESSAGE, sig)  # type: ignore[operator]


def test_check_signature_splits_r_s_v() -> None:
    r, s, recid = check_signature(SIG)
    assert (r.to_bytes(32, "big"), s.to_bytes(32, "big"), recid) == (SIG[:32], SIG[32:64], 1)


def test_signer_matches_eth_account_and_recovers() -> None:
    signer = Signer(SENDER_KEY)
    account = Account.from_key(SENDER_KEY)
    assert signer.address == address(account.address)
    ticket = zero_ticket(sender=signer.address, sender_nonce=1, face_value=10**9)
    sig = signer.sign_hash(ticket.hash())
    theirs = Account.sign_message(encode_defunct(primitive=ticket.hash()), SENDER_KEY).signature
    assert sig == bytes(theirs)
    assert sig[64] in (27, 28)
    assert ticket.recover_signer(sig) == signer.address
    assert recover_eth_keys(ticket.hash(), sig) == signer.address
    assert "4c08" not in repr(signer)


def test_wrong_message_recovers_another_address() -> None:
    assert recover(bytes(32), SIG) != SIG_ADDRESS


def test_win_check_is_keccak_of_sig_and_rand_below_win_prob() -> None:
    rand = 0x1234
    draw = int.from_bytes(keccak256(SIG + rand.to_bytes(32, "big")), "big")
    assert is_winning(SIG, rand, draw + 1)
    assert not is_winning(SIG, rand, draw)
    assert not is_winning(SIG, rand, 0)
    assert is_winning(SIG, rand, MAX_WIN_PROB)
    ticket = zero_ticket(win_prob=draw + 1)
    assert ticket.is_winning(SIG, rand)


def test_recipient_rand_hash_is_keccak_of_uint256() -> None:
    assert recipient_rand_hash(1) == keccak256(bytes(31) + b"\x01")
    # A rand with leading zero bytes is padded back to 32 bytes.
    assert recipient_rand_hash(0xFF) == keccak256(bytes(31) + b"\xff")


def test_expected_value() -> None:
    assert expected_value(100, MAX_WIN_PROB) == 100
    assert expected_value(100, 0) == 0
    assert expected_value(3, MAX_WIN_PROB // 2) == Fraction(3 * (MAX_WIN_PROB // 2), MAX_WIN_PROB)
    assert zero_ticket(face_value=100, win_prob=MAX_WIN_PROB).expected_value() == 100


def test_pure_python_signer_signs_the_same() -> None:
    message = keccak256(b"ticket")
    slow = Signer(SENDER_KEY, fast=False).sign_hash(message)
    assert slow == Signer(SENDER_KEY).sign_hash(message)
    assert recover_eth_keys(message, slow) == Signer(SENDER_KEY).address
