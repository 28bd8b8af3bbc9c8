"""TicketQueue: a payment's winning tickets stored in one transaction, on SQLite and on
PostgreSQL, a ticket stored twice kept once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa

from chain.queue import TicketQueue, Winner
from chain.tickets import Ticket


def _winner(nonce: int) -> Winner:
    ticket = Ticket(
        recipient=b"\x01" * 20,
        sender=b"\x02" * 20,
        face_value=10**15,
        win_prob=2**256 - 1,
        sender_nonce=nonce,
        recipient_rand_hash=b"\x03" * 32,
        creation_round=7,
        creation_round_block_hash=b"\x04" * 32,
    )
    return ticket, b"\x05" * 65, 1234, 99


@pytest.fixture(params=["sqlite", "postgres"])
def queue(request: pytest.FixtureRequest) -> Iterator[TicketQueue]:
    engine = sa.create_engine(request.getfixturevalue(f"{request.param}_url"))
    q = TicketQueue(engine)
    q.create_schema()
    yield q
    engine.dispose()


def test_winners_of_one_payment_stored_at_once(queue: TicketQueue) -> None:
    assert queue.add_all([]) == 0
    assert queue.add_all([_winner(1), _winner(2), _winner(3)]) == 3
    assert queue.pending_face_value(b"\x02" * 20) == 3 * 10**15
    assert {q.ticket.sender_nonce for q in queue.pending()} == {1, 2, 3}


def test_a_winner_stored_again_is_kept_once(queue: TicketQueue) -> None:
    assert queue.add(*_winner(1))
    assert queue.add_all([_winner(1), _winner(2)]) == 1
    assert not queue.add(*_winner(2))
    assert queue.pending_face_value(b"\x02" * 20) == 2 * 10**15


def test_pending_face_value_is_exact_past_64_bits(queue: TicketQueue) -> None:
    """The sum is taken in the database on PostgreSQL: exact for face values no float or
    64-bit integer holds, and only of this sender's pending winners."""
    big = 2**200 + 12345
    winners = []
    for nonce in range(3):
        ticket, sig, rand, expiration = _winner(nonce)
        winners.append((replace(ticket, face_value=big + nonce), sig, rand, expiration))
    other, sig, rand, expiration = _winner(9)
    winners.append((replace(other, sender=b"\x06" * 20), sig, rand, expiration))
    assert queue.add_all(winners) == 4
    assert queue.pending_face_value(b"\x02" * 20) == 3 * big + 3
    assert queue.pending_face_value(b"\x06" * 20) == 10**15
    assert queue.pending_face_value(b"\x07" * 20) == 0
    queue.redeemed(winners[0][0].hash(), b"\x08" * 32)
    assert queue.pending_face_value(b"\x02" * 20) == 2 * big + 3
