"""The Livepeer-Payment header, the sender SDK, and the durable winning-ticket queue."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import create_engine

from chain.errors import InvalidSignature, NonceReplayed
from chain.params import TicketParamsIssuer
from chain.payment import PaymentMalformed, decode_payment, encode_payment
from chain.queue import TicketQueue
from chain.sender import TicketSender
from chain.validation import NonceStore, StaticChainView, TicketReceiver
from tests.chain.conftest import SENDER_KEY, make_params


def test_sender_pays_with_tickets_the_receiver_accepts(
    issuer: TicketParamsIssuer, nonce_store: NonceStore
) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    ev = params.ticket(sender.address, 0).expected_value()
    header = sender.pay(params, value_wei=int(ev * 2) + 1)  # needs three tickets
    payment = decode_payment(header)
    assert payment.sender == sender.address and len(payment.tickets) == 3
    receiver = TicketReceiver(issuer, StaticChainView(round=7, l1_block=100), nonce_store)
    credited = 0
    for ticket, sig in payment.tickets:
        receipt = receiver.receive_ticket(
            ticket,
            sig,
            seed=params.seed,
            expiration_block=params.expiration_block,
            price_per_pixel=params.price_per_pixel,
        )
        credited += receipt.expected_value
    assert credited >= ev * 2
    with pytest.raises(NonceReplayed):  # the same header again is a replay
        ticket, sig = payment.tickets[0]
        receiver.receive_ticket(
            ticket,
            sig,
            seed=params.seed,
            expiration_block=params.expiration_block,
            price_per_pixel=params.price_per_pixel,
        )


def test_tampered_face_value_fails_the_signature(
    issuer: TicketParamsIssuer, nonce_store: NonceStore
) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    body = json.loads(base64.urlsafe_b64decode(sender.pay(params, 1) + "=="))
    body["ticketParams"]["faceValue"] = str(int(body["ticketParams"]["faceValue"]) * 2)
    tampered = base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
    ticket, sig = decode_payment(tampered).tickets[0]
    receiver = TicketReceiver(issuer, StaticChainView(round=7, l1_block=100), nonce_store)
    with pytest.raises(Exception) as failed:
        receiver.receive_ticket(
            ticket,
            sig,
            seed=params.seed,
            expiration_block=params.expiration_block,
            price_per_pixel=params.price_per_pixel,
        )
    # The recipientRand no longer matches (faceValue is part of it) or the signature fails.
    assert failed.value.__class__.__name__ in ("InvalidRecipientRand", InvalidSignature.__name__)


@pytest.mark.parametrize(
    "header",
    [
        "!!!not base64!!!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"[]").decode(),
        base64.urlsafe_b64encode(json.dumps({"sender": "0x12"}).encode()).decode(),
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(PaymentMalformed):
        decode_payment(header)


def test_field_checks(issuer: TicketParamsIssuer) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    good = json.loads(base64.urlsafe_b64decode(sender.pay(params, 1) + "=="))
    for path, value, message in [
        (("ticketParams", "winProb"), str(2**256), "uint256"),
        (("ticketParams", "recipient"), "0x1234", "20 bytes"),
        (("ticketParams", "pricePerPixel"), "1/0", "pricePerPixel"),
        (("senderParams",), [], "at least one"),
        (("senderParams",), [{"senderNonce": 2**33, "sig": "0x" + "00" * 65}], "uint32"),
    ]:
        body = json.loads(json.dumps(good))
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        raw = base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
        with pytest.raises(PaymentMalformed, match=message):
            decode_payment(raw)


def test_round_trip_keeps_every_field(issuer: TicketParamsIssuer) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    header = encode_payment(sender.address, params, [(7, b"\x01" * 65)])
    payment = decode_payment(header)
    assert payment.params == params
    assert payment.tickets[0][0] == params.ticket(sender.address, 7)


@pytest.fixture(params=["sqlite", "postgres"])
def queue(request: pytest.FixtureRequest) -> TicketQueue:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    engine = create_engine(url.replace("postgresql+psycopg", "postgresql+psycopg"))
    request.addfinalizer(engine.dispose)
    q = TicketQueue(engine)
    q.create_schema()
    return q


def test_winning_tickets_are_stored_once_and_kept_until_redeemed(
    issuer: TicketParamsIssuer, queue: TicketQueue
) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    payment = decode_payment(sender.pay(params, 1))
    ticket, sig = payment.tickets[0]
    assert queue.add(ticket, sig, 12345, params.expiration_block)
    assert not queue.add(ticket, sig, 12345, params.expiration_block)  # idempotent
    assert queue.due(params.expiration_block - 1) == []
    due = queue.due(params.expiration_block)
    assert [q.ticket for q in due] == [ticket] and due[0].recipient_rand == 12345
    queue.retry_later(ticket.hash(), "execution reverted: out of gas")
    kept = queue.due(params.expiration_block)[0]
    assert kept.attempts == 1 and "out of gas" in (kept.last_error or "")
    queue.redeemed(ticket.hash(), b"\x11" * 32)
    assert queue.pending() == []
