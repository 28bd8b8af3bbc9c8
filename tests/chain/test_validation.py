"""ReceiveTicket in go-livepeer's order, with nonces in real Redis (and the in-memory store)."""

from __future__ import annotations

import inspect
from dataclasses import replace
from fractions import Fraction

import pytest
import redis

import chain.errors as errors
from chain.errors import (
    ChainError,
    InvalidRecipient,
    InvalidRecipientRand,
    InvalidSender,
    InvalidSignature,
    NonceReplayed,
    SenderUnlocking,
    TicketError,
    TicketParamsExpired,
    TooManyNonces,
)
from chain.params import TicketParams, TicketParamsIssuer
from chain.signing import Signer
from chain.tickets import MAX_WIN_PROB, ZERO_ADDRESS, Ticket, recipient_rand_hash
from chain.validation import (
    NONCE_TTL_S,
    MemoryNonceStore,
    NonceStore,
    Receipt,
    RedisNonceStore,
    StaticChainView,
    TicketReceiver,
)
from tests.chain.conftest import PRICE, make_params


def receive(receiver: TicketReceiver, params: TicketParams, ticket: Ticket, sig: bytes) -> Receipt:
    return receiver.receive_ticket(
        ticket,
        sig,
        seed=params.seed,
        expiration_block=params.expiration_block,
        price_per_pixel=params.price_per_pixel,
    )


@pytest.fixture
def chain_view() -> StaticChainView:
    return StaticChainView(round=7, l1_block=100)


@pytest.fixture
def receiver(
    issuer: TicketParamsIssuer, chain_view: StaticChainView, nonce_store: NonceStore
) -> TicketReceiver:
    return TicketReceiver(issuer, chain_view, nonce_store)


def test_valid_ticket_wins_and_is_credited(
    receiver: TicketReceiver, issuer: TicketParamsIssuer, signer: Signer
) -> None:
    params = make_params(issuer, signer.address)
    assert params.win_prob == MAX_WIN_PROB
    ticket = params.ticket(signer.address, 1)
    sig = signer.sign_hash(ticket.hash())
    receipt = receive(receiver, params, ticket, sig)
    assert receipt.won
    assert receipt.expected_value == Fraction(5)
    assert receipt.ticket_hash == ticket.hash()
    assert ticket.is_winning(sig, receipt.recipient_rand)


def test_low_win_prob_ticket_is_credited_its_ev(
    receiver: TicketReceiver, issuer: TicketParamsIssuer, signer: Signer
) -> None:
    # Params with winProb 1: almost surely a loser, still worth faceValue / (2^256 - 1).
    params = make_params(issuer, signer.address)
    rand = issuer.recipient_rand(
        params.seed,
        signer.address,
        10**18,
        1,
        params.expiration_block,
        PRICE,
        params.ticket(signer.address, 1).aux_data,
    )
    params = replace(
        params, face_value=10**18, win_prob=1, recipient_rand_hash=recipient_rand_hash(rand)
    )
    ticket = params.ticket(signer.address, 1)
    receipt = receive(receiver, params, ticket, signer.sign_hash(ticket.hash()))
    assert not receipt.won
    assert receipt.expected_value == Fraction(10**18, MAX_WIN_PROB)


def test_replayed_nonce_is_refused(
    receiver: TicketReceiver, issuer: TicketParamsIssuer, signer: Signer
) -> None:
    params = make_params(issuer, signer.address)
    ticket = params.ticket(signer.address, 1)
    sig = signer.sign_hash(ticket.hash())
    receive(receiver, params, ticket, sig)
    with pytest.raises(NonceReplayed):
        receive(receiver, params, ticket, sig)


def test_too_many_nonces_under_one_rand_hash(
    receiver: TicketReceiver, issuer: TicketParamsIssuer, signer: Signer
) -> None:
    params = make_params(issuer, signer.address)
    for nonce in (1, 2, 3):  # the fixtures' stores allow 3
        ticket = params.ticket(signer.address, nonce)
        receive(receiver, params, ticket, signer.sign_hash(ticket.hash()))
    ticket = params.ticket(signer.address, 4)
    with pytest.raises(TooManyNonces):
        receive(receiver, params, ticket, signer.sign_hash(ticket.hash()))
    # Fresh params are a fresh recipientRandHash.
    fresh = make_params(issuer, signer.address)
    ticket = fresh.ticket(signer.address, 4)
    receive(receiver, fresh, ticket, signer.sign_hash(ticket.hash()))


def test_expired_params_are_non_fatal_and_keep_the_receipt(
    receiver: TicketReceiver,
    issuer: TicketParamsIssuer,
    signer: Signer,
    chain_view: StaticChainView,
) -> None:
    params = make_params(issuer, signer.address)
    chain_view.l1_block = params.expiration_block
    ticket = params.ticket(signer.address, 1)
    with pytest.raises(TicketParamsExpired) as caught:
        receive(receiver, params, ticket, signer.sign_hash(ticket.hash()))
    assert not caught.value.fatal
    assert caught.value.receipt.won
    assert caught.value.receipt.expected_value == 5
    # The nonce was still recorded: an expired ticket cannot be replayed for credit.
    with pytest.raises(NonceReplayed):
        receive(receiver, params, ticket, signer.sign_hash(ticket.hash()))


def test_unlocking_sender_is_refused_first(
    receiver: TicketReceiver,
    issuer: TicketParamsIssuer,
    signer: Signer,
    chain_view: StaticChainView,
) -> None:
    params = make_params(issuer, signer.address)
    ticket = replace(params.ticket(signer.address, 1), recipient=bytes(19) + b"\x01")
    chain_view.withdraw_rounds = {signer.address: 8}  # round 7 + 1
    # Wrong recipient and a garbage signature too: the sender check comes first.
    with pytest.raises(SenderUnlocking):
        receive(receiver, params, ticket, b"\x00" * 65)
    chain_view.withdraw_rounds = {signer.address: 9}
    with pytest.raises(InvalidRecipient):
        receive(receiver, params, ticket, b"\x00" * 65)


def test_zero_sender_is_refused(receiver: TicketReceiver, issuer: TicketParamsIssuer) -> None:
    params = make_params(issuer, ZERO_ADDRESS)
    ticket = params.ticket(ZERO_ADDRESS, 1)
    with pytest.raises(InvalidSender):
        receive(receiver, params, ticket, b"\x00" * 65)


def test_tampered_params_fail_the_rand_check_before_the_signature(
    receiver: TicketReceiver, issuer: TicketParamsIssuer, signer: Signer
) -> None:
    params = make_params(issuer, signer.address)
    ticket = replace(params.ticket(signer.address, 1), face_value=params.face_value * 2)
    with pytest.raises(InvalidRecipientRand):
        receive(receiver, params, ticket, b"\x00" * 65)
    ticket = params.ticket(signer.address, 1)
    with pytest.raises(InvalidRecipientRand):
        receiver.receive_ticket(
            ticket,
            signer.sign_hash(ticket.hash()),
            seed=params.seed,
            expiration_block=params.expiration_block + 1,
            price_per_pixel=params.price_per_pixel,
        )


def test_bad_signature_is_refused_before_the_nonce_is_spent(
    receiver: TicketReceiver, issuer: TicketParamsIssuer, signer: Signer
) -> None:
    params = make_params(issuer, signer.address)
    ticket = params.ticket(signer.address, 1)
    other = Signer(bytes(31) + b"\x07")
    with pytest.raises(InvalidSignature, match="invalid signature over ticket hash"):
        receive(receiver, params, ticket, other.sign_hash(ticket.hash()))
    with pytest.raises(InvalidSignature, match="65 bytes"):
        receive(receiver, params, ticket, b"")
    receive(receiver, params, ticket, signer.sign_hash(ticket.hash()))


def test_redis_store_sets_an_expiry(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisNonceStore(client, prefix="t:")
    store.add(b"\xab" * 32, 1)
    key = "t:" + "ab" * 32
    assert client.smembers(key) == {b"1"}
    assert 0 < client.ttl(key) <= NONCE_TTL_S
    client.close()


def test_error_hierarchy() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert len(classes) == len(errors.__all__)
    for cls in classes:
        assert issubclass(cls, ChainError)
        assert (cls.__doc__ or "").startswith("Raised when"), cls
    fatal = {c.__name__ for c in classes if issubclass(c, TicketError) and c.fatal}
    assert "TicketParamsExpired" not in fatal
    assert {"InvalidSignature", "NonceReplayed", "SenderUnlocking"} <= fatal


def _two_stores(kind: str, request: pytest.FixtureRequest) -> tuple[NonceStore, NonceStore]:
    if kind == "memory":
        return MemoryNonceStore(max_nonces=3), MemoryNonceStore(max_nonces=3)
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    request.addfinalizer(client.close)
    return (
        RedisNonceStore(client, prefix="one:", max_nonces=3),
        RedisNonceStore(client, prefix="all:", max_nonces=3),
    )


@pytest.mark.parametrize("kind", ["redis", "memory"])
@pytest.mark.parametrize(
    "case", ["fine", "replayed", "bad signature", "fatal", "too many", "expired", "expired replay"]
)
def test_a_payment_at_once_answers_as_ticket_by_ticket(
    kind: str, case: str, issuer: TicketParamsIssuer, signer: Signer, request: pytest.FixtureRequest
) -> None:
    """receive_tickets (the nonces in one round trip) credits the same tickets, refuses with
    the same error and records the same nonces as receive_ticket in a loop."""
    one_store, all_store = _two_stores(kind, request)
    l1_block = 200 if case.startswith("expired") else 100
    one = TicketReceiver(issuer, StaticChainView(round=7, l1_block=l1_block), one_store)
    every = TicketReceiver(issuer, StaticChainView(round=7, l1_block=l1_block), all_store)
    params = make_params(issuer, signer.address)
    nonces = {"replayed": [1, 2, 2, 3], "too many": [1, 2, 3, 4, 5], "expired replay": [4, 5]}
    tickets = [params.ticket(signer.address, n) for n in nonces.get(case, [1, 2, 3])]
    payment = [(t, signer.sign_hash(t.hash())) for t in tickets]
    if case == "bad signature":
        payment[1] = (tickets[1], Signer(bytes(31) + b"\x07").sign_hash(tickets[1].hash()))
    if case == "fatal":
        payment[2] = (replace(tickets[2], recipient=bytes(20)), payment[2][1])
    if case == "expired replay":  # the first ticket's nonce was used before
        for store in (one_store, all_store):
            store.add(tickets[0].recipient_rand_hash, 4)

    def by_one() -> tuple[list[int], type[TicketError] | None]:
        credited: list[int] = []
        for ticket, sig in payment:
            try:
                credited.append(receive(one, params, ticket, sig).ticket.sender_nonce)
            except TicketParamsExpired as e:
                return [*credited, e.receipt.ticket.sender_nonce], TicketParamsExpired
            except TicketError as e:
                return credited, type(e)
        return credited, None

    receipts, error = every.receive_tickets(
        payment,
        seed=params.seed,
        expiration_block=params.expiration_block,
        price_per_pixel=params.price_per_pixel,
    )
    expected = by_one()
    assert ([r.ticket.sender_nonce for r in receipts], type(error) if error else None) == expected
    if isinstance(error, TicketParamsExpired):
        assert error.receipt == receipts[0]
    # The same nonces were recorded: each one is refused as a replay by both stores or by
    # neither.
    for n in sorted({t.sender_nonce for t in tickets}):
        seen = []
        for store in (one_store, all_store):
            try:
                store.add(tickets[0].recipient_rand_hash, n)
                seen.append(False)
            except NonceReplayed:
                seen.append(True)
            except TooManyNonces:
                seen.append(None)
        assert seen[0] == seen[1], (case, n)
