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
