"""The redemption queue: winning tickets, stored durably before a job's result is returned.

A winning ticket is worth its face value only once it is redeemed on chain, after its params'
expiration block (go-livepeer waits for the same). Each ticket is a row keyed by its hash
(recording it twice does nothing); the redemption task takes the due ones in batches and
records what happened to each: redeemed (with the transaction), or failed and still unused on
chain, in which case it stays queued for another try (go-livepeer drops it, issue #4013).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from chain.schema import create_tables
from chain.tickets import Ticket

__all__ = ["QueuedTicket", "TicketQueue", "Winner"]


def _now() -> datetime:
    return datetime.now(UTC)


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __tablename__ = "chain_winning_tickets"

    ticket_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sender: Mapped[bytes] = mapped_column(LargeBinary(20), index=True)
    recipient: Mapped[bytes] = mapped_column(LargeBinary(20))
    face_value: Mapped[str] = mapped_column(String(80))
    win_prob: Mapped[str] = mapped_column(String(80))
    sender_nonce: Mapped[int] = mapped_column(BigInteger)
    recipient_rand_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    creation_round: Mapped[int] = mapped_column(BigInteger)
    creation_round_block_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    sig: Mapped[bytes] = mapped_column(LargeBinary(65))
    recipient_rand: Mapped[str] = mapped_column(String(80))
    expiration_block: Mapped[int] = mapped_column(BigInteger, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    tx_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True, slots=True)
class QueuedTicket:
    """A winning ticket waiting for (or done with) redemption."""

    ticket: Ticket
    sig: bytes
    recipient_rand: int
    expiration_block: int
    state: str
    attempts: int
    last_error: str | None


#: A winning ticket as it is queued: the ticket, its signature, the recipient rand and the
#: params' expiration block.
Winner = tuple[Ticket, bytes, int, int]


def _row(ticket: Ticket, sig: bytes, recipient_rand: int, expiration_block: int) -> dict[str, Any]:
    now = _now()
    return {
        "ticket_hash": ticket.hash(),
        "sender": ticket.sender,
        "recipient": ticket.recipient,
        "face_value": str(ticket.face_value),
        "win_prob": str(ticket.win_prob),
        "sender_nonce": ticket.sender_nonce,
        "recipient_rand_hash": ticket.recipient_rand_hash,
        "creation_round": ticket.creation_round,
        "creation_round_block_hash": ticket.creation_round_block_hash,
        "sig": sig,
        "recipient_rand": str(recipient_rand),
        "expiration_block": expiration_block,
        "state": "pending",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


class TicketQueue:
    """Winning tickets in SQL (PostgreSQL, or SQLite embedded)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_schema(self) -> None:
        create_tables(_Base.metadata, self.engine)

    def add(self, ticket: Ticket, sig: bytes, recipient_rand: int, expiration_block: int) -> bool:
        """Store a winning ticket; False when it was already stored (same hash)."""
        try:
            with self.engine.begin() as conn:
                row = _row(ticket, sig, recipient_rand, expiration_block)
                conn.execute(insert(_Row).values(row))
        except IntegrityError:
            return False
        return True

    def add_all(self, winners: Sequence[Winner]) -> int:
        """Store the winning tickets of one payment in one transaction, skipping any already
        stored (same hash); how many were new."""
        if not winners:
            return 0
        rows = [_row(*w) for w in winners]
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            stmt: Any = pg_insert(_Row).values(rows).on_conflict_do_nothing()
        elif dialect == "sqlite":
            stmt = sqlite_insert(_Row).values(rows).on_conflict_do_nothing()
        else:  # pragma: no cover - the farm runs on PostgreSQL or SQLite
            return sum(self.add(*w) for w in winners)
        with self.engine.begin() as conn:
            return len(conn.execute(stmt.returning(_Row.ticket_hash)).all())

    def due(self, current_block: int, limit: int = 20) -> list[QueuedTicket]:
        """Pending tickets whose params expired by ``current_block``, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(_Row)
                .where(_Row.state == "pending", _Row.expiration_block <= current_block)
                .order_by(_Row.expiration_block, _Row.created_at)
                .limit(limit)
            ).all()
        return [self._view(r) for r in rows]

    def pending(self) -> list[QueuedTicket]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(_Row).where(_Row.state == "pending").order_by(_Row.created_at)
            ).all()
        return [self._view(r) for r in rows]

    def pending_face_value(self, sender: bytes) -> int:
        """The face values of ``sender``'s winners not yet redeemed: money its deposit and
        reserve still owe this recipient, so not float it can spend on new tickets.

        Read for every OrchestratorInfo a node sends (each segment's reply carries one), so
        PostgreSQL sums the (decimal text) face values itself, exactly, in one row; SQLite
        (the embedded node) sends them to be summed here."""
        pending = (_Row.state == "pending") & (_Row.sender == sender)
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                exact = func.sum(cast(_Row.face_value, Numeric(80, 0)))
                return int(conn.execute(select(exact).where(pending)).scalar() or 0)
            values = conn.execute(select(_Row.face_value).where(pending)).scalars().all()
        return sum(int(v) for v in values)

    def counts(self) -> dict[str, int]:
        """Tickets by state: pending, redeemed, failed."""

        with Session(self.engine) as session:
            rows = session.execute(select(_Row.state, func.count()).group_by(_Row.state)).all()
        return {str(state): int(n) for state, n in rows}

    def redeemed(self, ticket_hash: bytes, tx_hash: bytes) -> None:
        self._set(ticket_hash, state="redeemed", tx_hash=tx_hash)

    def retry_later(self, ticket_hash: bytes, error: str) -> None:
        """A redemption that failed while the ticket is still unused on chain: keep it."""
        with self.engine.begin() as conn:
            conn.execute(
                update(_Row)
                .where(_Row.ticket_hash == ticket_hash)
                .values(attempts=_Row.attempts + 1, last_error=error[:2000], updated_at=_now())
            )

    def give_up(self, ticket_hash: bytes, error: str) -> None:
        """A ticket that can never be redeemed (used elsewhere, sender gone)."""
        self._set(ticket_hash, state="failed", last_error=error[:2000])

    def _set(self, ticket_hash: bytes, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(_Row)
                .where(_Row.ticket_hash == ticket_hash)
                .values(updated_at=_now(), **values)
            )

    @staticmethod
    def _view(r: _Row) -> QueuedTicket:
        ticket = Ticket(
            recipient=r.recipient,
            sender=r.sender,
            face_value=int(r.face_value),
            win_prob=int(r.win_prob),
            sender_nonce=int(r.sender_nonce),
            recipient_rand_hash=r.recipient_rand_hash,
            creation_round=int(r.creation_round),
            creation_round_block_hash=r.creation_round_block_hash,
        )
        return QueuedTicket(
            ticket,
            r.sig,
            int(r.recipient_rand),
            int(r.expiration_block),
            r.state,
            int(r.attempts),
            r.last_error,
        )
