"""The ``Livepeer-Payment`` header: tickets a sender attaches to a job.

go-livepeer carries a protobuf ``Payment`` in this header. This gateway speaks HTTP+JSON, so
the header is base64url (no padding) of a JSON object with the same fields and names::

    {
      "sender": "0x…",                                  # 20-byte address
      "ticketParams": {
        "recipient": "0x…", "faceValue": "…", "winProb": "…",   # decimal strings (uint256)
        "recipientRandHash": "0x…", "seed": "…", "expirationBlock": "…",
        "pricePerPixel": "numerator/denominator",
        "expirationParams": {"creationRound": "…", "creationRoundBlockHash": "0x…"}
      },
      "senderParams": [{"senderNonce": 1, "sig": "0x…"}, …]   # one per ticket
    }

Big integers travel as decimal strings so that no JSON parser rounds them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from chain.errors import ChainError
from chain.params import TicketParams
from chain.tickets import Ticket

__all__ = [
    "MAX_TICKETS",
    "Payment",
    "PaymentMalformed",
    "decode_payment",
    "encode_payment",
    "params_from_json",
    "params_to_json",
]

#: More tickets than this in one header is refused (go-livepeer caps nonces per seed at 600).
MAX_TICKETS = 600
MAX_HEADER_BYTES = 256 * 1024


class PaymentMalformed(ChainError):
    """Raised when a Livepeer-Payment header cannot be decoded into tickets."""


@dataclass(frozen=True, slots=True)
class Payment:
    """A decoded payment: who pays, with which params, and the signed tickets."""

    sender: bytes
    params: TicketParams
    tickets: tuple[tuple[Ticket, bytes], ...]


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def params_to_json(params: TicketParams) -> dict[str, Any]:
    """Ticket params in the header's JSON form (what the gateway's ticket-params route serves)."""
    return {
        "recipient": _hex(params.recipient),
        "faceValue": str(params.face_value),
        "winProb": str(params.win_prob),
        "recipientRandHash": _hex(params.recipient_rand_hash),
        "seed": str(params.seed),
        "expirationBlock": str(params.expiration_block),
        "pricePerPixel": f"{params.price_per_pixel.numerator}/{params.price_per_pixel.denominator}",
        "expirationParams": {
            "creationRound": str(params.creation_round),
            "creationRoundBlockHash": _hex(params.creation_round_block_hash),
        },
    }


def params_from_json(obj: Any) -> TicketParams:
    """Ticket params from their JSON form; PaymentMalformed with the reason otherwise."""
    p = _object(obj, "ticketParams")
    expiration = _object(p.get("expirationParams"), "expirationParams")
    price = p.get("pricePerPixel")
    try:
        num, _, den = str(price).partition("/")
        price_per_pixel = Fraction(int(num), int(den or "1"))
    except (ValueError, ZeroDivisionError):
        raise PaymentMalformed("pricePerPixel must be 'numerator/denominator'") from None
    return TicketParams(
        recipient=_bytes(p, "recipient", 20),
        face_value=_uint(p, "faceValue"),
        win_prob=_uint(p, "winProb"),
        recipient_rand_hash=_bytes(p, "recipientRandHash", 32),
        seed=_uint(p, "seed"),
        expiration_block=_uint(p, "expirationBlock"),
        price_per_pixel=price_per_pixel,
        creation_round=_uint(expiration, "creationRound"),
        creation_round_block_hash=_bytes(expiration, "creationRoundBlockHash", 32),
    )


def encode_payment(sender: bytes, params: TicketParams, signed: list[tuple[int, bytes]]) -> str:
    """The header value for tickets (sender nonce, signature) made from ``params``."""
    body = {
        "sender": _hex(sender),
        "ticketParams": params_to_json(params),
        "senderParams": [{"senderNonce": n, "sig": _hex(sig)} for n, sig in signed],
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _bytes(obj: dict[str, Any], key: str, size: int | None) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise PaymentMalformed(f"{key} must be a 0x-prefixed hex string")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError:
        raise PaymentMalformed(f"{key} is not hex") from None
    if size is not None and len(data) != size:
        raise PaymentMalformed(f"{key} must be {size} bytes, got {len(data)}")
    return data


def _uint(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 78:
        number = int(value)
    else:
        raise PaymentMalformed(f"{key} must be a non-negative integer (a decimal string)")
    if number >= 2**256:
        raise PaymentMalformed(f"{key} does not fit in uint256")
    return number


def _object(obj: Any, name: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise PaymentMalformed(f"{name} must be a JSON object")
    return obj


def decode_payment(header: str) -> Payment:
    """The payment in a header value; PaymentMalformed with the reason otherwise."""
    if len(header) > MAX_HEADER_BYTES:
        raise PaymentMalformed(f"payment header over {MAX_HEADER_BYTES} bytes")
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        body = _object(json.loads(raw), "payment")
    except (binascii.Error, ValueError) as e:
        raise PaymentMalformed(f"payment header is not base64url JSON: {e}") from None
    sender = _bytes(body, "sender", 20)
    params = params_from_json(body.get("ticketParams"))
    entries = body.get("senderParams")
    if not isinstance(entries, list) or not entries:
        raise PaymentMalformed("senderParams must list at least one ticket")
    if len(entries) > MAX_TICKETS:
        raise PaymentMalformed(f"at most {MAX_TICKETS} tickets per payment")
    tickets = []
    for entry in entries:
        item = _object(entry, "senderParams[]")
        nonce = _uint(item, "senderNonce")
        if nonce >= 2**32:
            raise PaymentMalformed("senderNonce does not fit in uint32")
        try:
            ticket = params.ticket(sender, nonce)
        except ValueError as err:
            raise PaymentMalformed(f"ticket cannot be built: {err}") from None
        tickets.append((ticket, _bytes(item, "sig", 65)))
    return Payment(sender, params, tuple(tickets))
