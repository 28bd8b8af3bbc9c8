"""TicketQueue: a payment's winning tickets stored in one transaction, on SQLite and on
PostgreSQL, a ticket stored twice kept once."""

from __future__ import annotations

from collections.abc import Iterator

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
