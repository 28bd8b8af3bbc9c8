"""The ``Livepeer-Payment`` header: tickets a sender attaches to a job.

The header is go-livepeer's: standard base64 of a protobuf ``net.Payment`` (chain/pm.proto)::

    Payment {ticket_params 1, sender 2, expiration_params 3,
             ticket_sender_params 4 (repeated {sender_nonce 1, sig 2}), expected_price 5}

The same decoder serves both doors where tickets arrive: a client paying the gateway, and a
gateway paying an orchestrator's ``/segment``. The expiration params travel in field 3 (the
orchestrator reads them there) and also in ``ticket_params.expiration_params``; the price the
sender was quoted travels as ``expected_price`` and is part of the recipient rand, so a ticket
whose price was altered fails validation.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from fractions import Fraction

from google.protobuf.message import DecodeError

from chain import pm_pb2
from chain.errors import ChainError
from chain.params import TicketParams
from chain.tickets import Ticket

__all__ = [
    "MAX_TICKETS",
    "ExpectedPriceInvalid",
    "Payment",
    "PaymentMalformed",
    "decode_payment",
    "encode_payment",
    "params_from_json",
    "params_from_net",
    "params_to_json",
    "params_to_net",
    "price_from_net",
    "price_to_net",
    "uint_bytes",
]

#: More tickets than this in one header is refused (go-livepeer caps nonces per seed at 600).
MAX_TICKETS = 600
MAX_HEADER_BYTES = 256 * 1024
_INT64_MAX = 2**63 - 1


class PaymentMalformed(ChainError):
    """Raised when a Livepeer-Payment header cannot be decoded into tickets."""


class ExpectedPriceInvalid(PaymentMalformed):
    """Raised when a payment's expected price is not a price (a zero denominator, a negative
    numerator)."""


@dataclass(frozen=True, slots=True)
class Payment:
    """A decoded payment: who pays, at which price, with which params and signed tickets.

    ``params`` is None when the payment carries no tickets (a sender with credit left, or a
    free node); ``price`` is None when the sender stated none.
    """

    sender: bytes
    price: Fraction | None
    params: TicketParams | None
    tickets: tuple[tuple[Ticket, bytes], ...]


def uint_bytes(value: int) -> bytes:
    """An unsigned integer as go-livepeer's ``big.Int.Bytes()``: minimal big-endian, empty for 0."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _uint(data: bytes, name: str) -> int:
    if len(data) > 32:
        raise PaymentMalformed(f"{name} does not fit in uint256")
    return int.from_bytes(data, "big")


def _sized(data: bytes, name: str, size: int, *, pad: bool = False) -> bytes:
    if pad and len(data) < size:
        return data.rjust(size, b"\x00")
    if len(data) != size:
        raise PaymentMalformed(f"{name} must be {size} bytes, got {len(data)}")
    return bytes(data)


def price_to_net(price: Fraction, capability: int = 0, constraint: str = "") -> pm_pb2.PriceInfo:
    """A price as ``net.PriceInfo``: the reduced fraction, as go-livepeer sends it (for AI,
    with the capability and model it is for)."""
    if price.numerator > _INT64_MAX or price.denominator > _INT64_MAX:
        raise ValueError(f"price {price} does not fit PriceInfo's int64 fields")
    return pm_pb2.PriceInfo(
        pricePerUnit=price.numerator,
        pixelsPerUnit=price.denominator,
        capability=capability,
        constraint=constraint,
    )


def price_from_net(info: pm_pb2.PriceInfo) -> Fraction:
    """The price a ``net.PriceInfo`` states; ExpectedPriceInvalid when it states none."""
    if info.pixelsPerUnit <= 0:
        raise ExpectedPriceInvalid(
            "invalid expected price sent with payment err=pixels per unit is 0"
        )
    if info.pricePerUnit < 0:
        raise ExpectedPriceInvalid("invalid expected price sent with payment err=negative price")
    return Fraction(info.pricePerUnit, info.pixelsPerUnit)


def params_to_net(params: TicketParams) -> pm_pb2.TicketParams:
    """Ticket params in their wire form (what OrchestratorInfo.ticket_params carries)."""
    return pm_pb2.TicketParams(
        recipient=params.recipient,
        face_value=uint_bytes(params.face_value),
        win_prob=uint_bytes(params.win_prob),
        recipient_rand_hash=params.recipient_rand_hash,
        seed=uint_bytes(params.seed),
        expiration_block=uint_bytes(params.expiration_block),
        expiration_params=pm_pb2.TicketExpirationParams(
            creation_round=params.creation_round,
            creation_round_block_hash=params.creation_round_block_hash,
        ),
    )


def params_from_net(
    msg: pm_pb2.TicketParams,
    price: Fraction,
    expiration: pm_pb2.TicketExpirationParams | None = None,
) -> TicketParams:
    """Ticket params from their wire form, quoted at ``price``; ``expiration`` overrides the
    params' own expiration fields (a Payment carries them beside the params)."""
    exp = expiration if expiration is not None else msg.expiration_params
    if exp.creation_round < 0:
        raise PaymentMalformed("creation_round cannot be negative")
    return TicketParams(
        recipient=_sized(msg.recipient, "recipient", 20),
        face_value=_uint(msg.face_value, "face_value"),
        win_prob=_uint(msg.win_prob, "win_prob"),
        recipient_rand_hash=_sized(msg.recipient_rand_hash, "recipient_rand_hash", 32),
        seed=_uint(msg.seed, "seed"),
        expiration_block=_uint(msg.expiration_block, "expiration_block"),
        price_per_pixel=price,
        creation_round=exp.creation_round,
        creation_round_block_hash=_sized(
            exp.creation_round_block_hash, "creation_round_block_hash", 32, pad=True
        ),
    )


def params_to_json(params: TicketParams) -> dict[str, object]:
    """Ticket params as JSON, for HTTP APIs (integers as decimal strings, bytes as 0x hex)."""
    return {
        "recipient": "0x" + params.recipient.hex(),
        "faceValue": str(params.face_value),
        "winProb": str(params.win_prob),
        "recipientRandHash": "0x" + params.recipient_rand_hash.hex(),
        "seed": str(params.seed),
        "expirationBlock": str(params.expiration_block),
        "pricePerPixel": f"{params.price_per_pixel.numerator}/{params.price_per_pixel.denominator}",
        "expirationParams": {
            "creationRound": str(params.creation_round),
            "creationRoundBlockHash": "0x" + params.creation_round_block_hash.hex(),
        },
    }


def params_from_json(obj: object) -> TicketParams:
    """Ticket params from their JSON form; PaymentMalformed with the reason otherwise."""
    if not isinstance(obj, dict) or not isinstance(obj.get("expirationParams"), dict):
        raise PaymentMalformed("ticketParams must be a JSON object with expirationParams")
    exp = obj["expirationParams"]
    try:
        num, _, den = str(obj["pricePerPixel"]).partition("/")
        price = Fraction(int(num), int(den or "1"))
        return TicketParams(
            recipient=_sized(bytes.fromhex(str(obj["recipient"])[2:]), "recipient", 20),
            face_value=int(str(obj["faceValue"])),
            win_prob=int(str(obj["winProb"])),
            recipient_rand_hash=_sized(
                bytes.fromhex(str(obj["recipientRandHash"])[2:]), "recipientRandHash", 32
            ),
            seed=int(str(obj["seed"])),
            expiration_block=int(str(obj["expirationBlock"])),
            price_per_pixel=price,
            creation_round=int(str(exp["creationRound"])),
            creation_round_block_hash=_sized(
                bytes.fromhex(str(exp["creationRoundBlockHash"])[2:]), "creationRoundBlockHash", 32
            ),
        )
    except (KeyError, ValueError, ZeroDivisionError) as e:
        raise PaymentMalformed(f"ticketParams: {e}") from None


def encode_payment(
    sender: bytes,
    params: TicketParams | None,
    signed: list[tuple[int, bytes]],
    *,
    price: Fraction | None = None,
) -> str:
    """The header value for tickets (sender nonce, signature) made from ``params``; with no
    params, a payment that only names the sender and the price it expects."""
    message = pm_pb2.Payment(sender=sender)
    quoted = price if price is not None else params.price_per_pixel if params else None
    if quoted is not None:
        message.expected_price.CopyFrom(price_to_net(quoted))
    if params is not None:
        net = params_to_net(params)
        message.ticket_params.CopyFrom(net)
        message.expiration_params.CopyFrom(net.expiration_params)
        message.ticket_sender_params.extend(
            pm_pb2.TicketSenderParams(sender_nonce=n, sig=sig) for n, sig in signed
        )
    return base64.b64encode(message.SerializeToString()).decode()


def decode_payment(header: str) -> Payment:
    """The payment in a header value; PaymentMalformed with go-livepeer's reason otherwise
    (``base64 decode error: …``, ``protobuf unmarshal error: …``)."""
    if len(header) > MAX_HEADER_BYTES:
        raise PaymentMalformed(f"payment header over {MAX_HEADER_BYTES} bytes")
    try:
        raw = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise PaymentMalformed(f"base64 decode error: {e}") from None
    message = pm_pb2.Payment()
    try:
        message.ParseFromString(raw)
    except DecodeError as e:
        raise PaymentMalformed(f"protobuf unmarshal error: {e}") from None
    sender = _sized(message.sender, "sender", 20)
    price = price_from_net(message.expected_price) if message.HasField("expected_price") else None
    if not message.HasField("ticket_params"):
        if message.ticket_sender_params:
            raise PaymentMalformed("tickets sent without ticket params")
        return Payment(sender, price, None, ())
    if len(message.ticket_sender_params) > MAX_TICKETS:
        raise PaymentMalformed(f"at most {MAX_TICKETS} tickets per payment")
    expiration = message.expiration_params if message.HasField("expiration_params") else None
    params = params_from_net(message.ticket_params, price or Fraction(0), expiration)
    tickets = []
    for entry in message.ticket_sender_params:
        if len(entry.sig) != 65:
            raise PaymentMalformed(f"ticket signature must be 65 bytes, got {len(entry.sig)}")
        try:
            ticket = params.ticket(sender, entry.sender_nonce)
        except ValueError as err:
            raise PaymentMalformed(f"ticket cannot be built: {err}") from None
        tickets.append((ticket, bytes(entry.sig)))
    return Payment(sender, price, params, tuple(tickets))
