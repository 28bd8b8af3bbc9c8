"""Keys, a recipient and a receiver for the chain tests."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import pytest
import redis

from chain.params import RecipientConfig, TicketParams, TicketParamsIssuer
from chain.signing import Signer
from chain.validation import MemoryNonceStore, NonceStore, RedisNonceStore

SENDER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
RECIPIENT = bytes.fromhex("73aed7b5deb30222fa896f399d46cc99c7bee57f")
SECRET = bytes(range(32))
PRICE = Fraction(1200, 1)
BLOCK_HASH = bytes.fromhex("41b1a0649752af1b28b3dc29a1556eee781e4a4c3a1f7f53f90fa834de098c4d")


@pytest.fixture
def signer() -> Signer:
    return Signer(SENDER_KEY)


@pytest.fixture
def issuer() -> TicketParamsIssuer:
    # EV = faceValue = 5 makes winProb 2^256 - 1: every ticket wins.
    config = RecipientConfig(ev=5, redeem_gas=1, tx_cost_multiplier=5)
    return TicketParamsIssuer(RECIPIENT, config, SECRET)


def make_params(issuer: TicketParamsIssuer, sender: bytes, *, l1_block: int = 100) -> TicketParams:
    return issuer.ticket_params(
        sender,
        PRICE,
        gas_price=1,
        max_float=10**18,
        last_seen_l1_block=l1_block,
        creation_round=7,
        creation_round_block_hash=BLOCK_HASH,
    )


@pytest.fixture(params=["redis", "memory"])
def nonce_store(request: pytest.FixtureRequest) -> Iterator[NonceStore]:
    """The real Redis store and the in-memory one, held to the same tests."""
    if request.param == "memory":
        yield MemoryNonceStore(max_nonces=3)
        return
    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    yield RedisNonceStore(client, max_nonces=3)
    client.close()
