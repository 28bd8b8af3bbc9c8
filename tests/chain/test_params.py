"""Recipient-side ticket params: face value, win probability, rand and expiry."""

from __future__ import annotations

import hashlib
import hmac
from fractions import Fraction

import pytest

from chain.errors import InsufficientSenderReserve
from chain.params import (
    PARAMS_EXPIRY_BLOCKS,
    RecipientConfig,
    TicketParamsIssuer,
    creation_round,
    face_value,
    win_prob,
)
from chain.signing import keccak256
from chain.tickets import MAX_WIN_PROB, ZERO_HASH, expected_value
from tests.chain.conftest import BLOCK_HASH, RECIPIENT, SECRET

SENDER = bytes.fromhex("11" * 20)
GWEI = 10**9


# payments.md 2.5: EV = 5, RedeemGas = 10000, multiplier 100.
@pytest.mark.parametrize(
    ("gas_price", "face", "prob"),
    [
        (100, 100000000, 5789604461865809771178549250434395392663499233282028201972879200395660),
        (777, 777000000, 745122839364969082519761808292714979750772102095499125093034646125570),
    ],
)
def test_ticket_params_vector(gas_price: int, face: int, prob: int) -> None:
    config = RecipientConfig(ev=5, redeem_gas=10000, tx_cost_multiplier=100)
    assert face_value(config, gas_price, max_float=10**30) == face
    assert win_prob(5, face) == prob
    assert expected_value(face, prob) >= 5


def test_gas_price_is_floored_at_min_gas_price() -> None:
    config = RecipientConfig(ev=5, redeem_gas=10000, tx_cost_multiplier=100, min_gas_price=200)
    assert face_value(config, 100, max_float=10**30) == 200_000_000


def test_face_value_below_ev_becomes_ev_times_100() -> None:
    config = RecipientConfig(ev=5, redeem_gas=1, tx_cost_multiplier=1)
    assert face_value(config, 1, max_float=10**30) == 500


def test_face_value_is_capped_by_max_float_then_max_face_value() -> None:
    config = RecipientConfig(ev=5, redeem_gas=10000, tx_cost_multiplier=100)
    assert face_value(config, 100, max_float=50_000_000) == 50_000_000
    capped = RecipientConfig(
        ev=5, redeem_gas=10000, tx_cost_multiplier=100, max_face_value=3_000_000
    )
    assert face_value(capped, 100, max_float=50_000_000) == 3_000_000


def test_face_value_below_ev_is_insufficient_reserve() -> None:
    config = RecipientConfig(ev=5, redeem_gas=10000, tx_cost_multiplier=100)
    with pytest.raises(InsufficientSenderReserve, match="below the ticket EV"):
        face_value(config, 100, max_float=4)


def test_face_value_below_tx_cost_and_avg_cost_is_insufficient_reserve() -> None:
    # txCost = 10 gas x 10 gwei = 1e11; the 3 gwei average cost is 3e10.
    config = RecipientConfig(ev=1, redeem_gas=10, tx_cost_multiplier=100)
    # Below txCost but above the average cost: accepted.
    assert face_value(config, 10 * GWEI, max_float=5 * 10**10) == 5 * 10**10
    with pytest.raises(InsufficientSenderReserve, match="redeem cost"):
        face_value(config, 10 * GWEI, max_float=2 * 10**10)


def test_win_prob_edges() -> None:
    assert win_prob(5, 5) == MAX_WIN_PROB
    assert win_prob(5, 0) == 0
    # 7 does not divide 2^256 - 1: the formula overshoots uint256 and is capped.
    assert win_prob(7, 7) == MAX_WIN_PROB
    assert win_prob(8_000_000_000, 10**15) == 8_000_000_000 * -(-MAX_WIN_PROB // 10**15)


def test_creation_round_falls_back_when_block_hash_is_zero() -> None:
    hashes = {10: ZERO_HASH, 9: BLOCK_HASH}
    assert creation_round(10, hashes.__getitem__) == (9, BLOCK_HASH)
    assert creation_round(9, hashes.__getitem__) == (9, BLOCK_HASH)


def test_recipient_rand_is_hmac_of_minimal_big_endian_fields() -> None:
    issuer = TicketParamsIssuer(RECIPIENT, RecipientConfig(), SECRET)
    aux = bytes(31) + b"\x07" + BLOCK_HASH
    # seed 1, faceValue 256, winProb 0 (no bytes), block 40, price 3/6 = 1/2, then auxData.
    message = b"\x01" + SENDER + b"\x01\x00" + b"" + b"\x28" + b"\x01" + b"\x02" + aux
    expected = hmac.new(SECRET, message, hashlib.sha256).digest()
    rand = issuer.recipient_rand(1, SENDER, 256, 0, 40, Fraction(3, 6), aux)
    assert rand == int.from_bytes(expected, "big")


def test_issued_params_commit_to_their_rand() -> None:
    config = RecipientConfig(ev=5, redeem_gas=10000, tx_cost_multiplier=100)
    issuer = TicketParamsIssuer(RECIPIENT, config, SECRET)
    params = issuer.ticket_params(
        SENDER,
        Fraction(1200),
        gas_price=100,
        max_float=10**30,
        last_seen_l1_block=1000,
        creation_round=7,
        creation_round_block_hash=BLOCK_HASH,
        seed=12345,
    )
    assert (params.face_value, params.win_prob) == (100_000_000, win_prob(5, 100_000_000))
    assert params.expiration_block == 1000 + PARAMS_EXPIRY_BLOCKS == 1040
    ticket = params.ticket(SENDER, 1)
    rand = issuer.recipient_rand(
        12345, SENDER, ticket.face_value, ticket.win_prob, 1040, Fraction(1200), ticket.aux_data
    )
    assert params.recipient_rand_hash == keccak256(rand.to_bytes(32, "big"))
    # Any tampered field derives another rand.
    assert rand != issuer.recipient_rand(
        12345, SENDER, ticket.face_value + 1, ticket.win_prob, 1040, Fraction(1200), ticket.aux_data
    )


def test_seeds_and_secrets_are_fresh() -> None:
    config = RecipientConfig()
    a, b = TicketParamsIssuer(RECIPIENT, config), TicketParamsIssuer(RECIPIENT, config)
    assert a.recipient_rand(1, SENDER, 1, 1, 1, Fraction(1), b"") != b.recipient_rand(
        1, SENDER, 1, 1, 1, Fraction(1), b""
    )

    def seed() -> int:
        return a.ticket_params(
            SENDER,
            Fraction(1),
            gas_price=GWEI,
            max_float=10**18,
            last_seen_l1_block=1,
            creation_round=1,
            creation_round_block_hash=BLOCK_HASH,
        ).seed

    assert seed() != seed()
    assert SECRET.hex() not in repr(a)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        RecipientConfig(ev=0)
    with pytest.raises(ValueError):
        RecipientConfig(max_face_value=-1)
