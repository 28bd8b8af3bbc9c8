"""The Livepeer-Payment header, the sender SDK, and the durable winning-ticket queue."""

from __future__ import annotations

import base64
from fractions import Fraction

import pytest
from sqlalchemy import create_engine

from chain import pm_pb2
from chain.errors import InvalidRecipientRand, InvalidSignature, NonceReplayed
from chain.params import TicketParamsIssuer
from chain.payment import PaymentMalformed, decode_payment, encode_payment, uint_bytes
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


def _payment(header: str) -> pm_pb2.Payment:
    message = pm_pb2.Payment()
    message.ParseFromString(base64.b64decode(header))
    return message


def _header(message: pm_pb2.Payment) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def test_tampered_face_value_fails_the_signature(
    issuer: TicketParamsIssuer, nonce_store: NonceStore
) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    message = _payment(sender.pay(params, 1))
    message.ticket_params.face_value = uint_bytes(params.face_value * 2)
    ticket, sig = decode_payment(_header(message)).tickets[0]
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


def test_tampered_price_fails_the_recipient_rand(
    issuer: TicketParamsIssuer, nonce_store: NonceStore
) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    message = _payment(sender.pay(params, 1))
    message.expected_price.pricePerUnit = 1  # a sender that claims a lower price
    payment = decode_payment(_header(message))
    assert payment.params is not None and payment.params.price_per_pixel != params.price_per_pixel
    ticket, sig = payment.tickets[0]
    receiver = TicketReceiver(issuer, StaticChainView(round=7, l1_block=100), nonce_store)
    with pytest.raises(InvalidRecipientRand):
        receiver.receive_ticket(
            ticket,
            sig,
            seed=payment.params.seed,
            expiration_block=payment.params.expiration_block,
            price_per_pixel=payment.params.price_per_pixel,
        )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("!!!not base64!!!", "base64 decode error"),
        (base64.b64encode(b"\xff\xff\xff").decode(), "protobuf unmarshal error"),
        (base64.b64encode(b"").decode(), "sender must be 20 bytes"),
        (_header(pm_pb2.Payment(sender=b"\x12")), "sender must be 20 bytes"),
    ],
)
def test_malformed_headers(header: str, message: str) -> None:
    with pytest.raises(PaymentMalformed, match=message):
        decode_payment(header)


def test_field_checks(issuer: TicketParamsIssuer) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    good = _payment(sender.pay(params, 1))

    def win_prob_too_wide(m: pm_pb2.Payment) -> None:
        m.ticket_params.win_prob = b"\x01" + b"\x00" * 32

    def short_recipient(m: pm_pb2.Payment) -> None:
        m.ticket_params.recipient = b"\x12\x34"

    def zero_pixels(m: pm_pb2.Payment) -> None:
        m.expected_price.pixelsPerUnit = 0

    def short_sig(m: pm_pb2.Payment) -> None:
        m.ticket_sender_params[0].sig = b"\x00" * 64

    def too_many(m: pm_pb2.Payment) -> None:
        m.ticket_sender_params.extend(
            pm_pb2.TicketSenderParams(sender_nonce=n, sig=b"\x00" * 65) for n in range(600)
        )

    def tickets_without_params(m: pm_pb2.Payment) -> None:
        m.ClearField("ticket_params")

    for change, message in [
        (win_prob_too_wide, "uint256"),
        (short_recipient, "20 bytes"),
        (zero_pixels, "pixels per unit is 0"),
        (short_sig, "65 bytes"),
        (too_many, "at most 600"),
        (tickets_without_params, "without ticket params"),
    ]:
        body = pm_pb2.Payment()
        body.CopyFrom(good)
        change(body)
        with pytest.raises(PaymentMalformed, match=message):
            decode_payment(_header(body))


def test_round_trip_keeps_every_field(issuer: TicketParamsIssuer) -> None:
    sender = TicketSender(SENDER_KEY)
    params = make_params(issuer, sender.address)
    header = encode_payment(sender.address, params, [(7, b"\x01" * 65)])
    payment = decode_payment(header)
    assert payment.params == params
    assert payment.price == params.price_per_pixel
    assert payment.tickets[0][0] == params.ticket(sender.address, 7)
    wire = _payment(header)
    # The orchestrator reads the expiration params beside the ticket params (field 3).
    assert wire.expiration_params.creation_round == params.creation_round
    assert wire.ticket_params.expiration_block == uint_bytes(params.expiration_block)


def test_a_payment_without_tickets_names_only_the_sender() -> None:
    sender = TicketSender(SENDER_KEY)
    payment = decode_payment(encode_payment(sender.address, None, [], price=Fraction(3, 2)))
    assert payment.sender == sender.address and payment.price == Fraction(3, 2)
    assert payment.params is None and payment.tickets == ()


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
