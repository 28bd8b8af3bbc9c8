"""The session log: every attempt of every segment, with orchestrator, latency, error, price."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, distinct, func, insert, select
from sqlalchemy.exc import IntegrityError

from farm.runtime import utcnow
from gateway.errors import NotFound
from gateway.models import SegmentAttempt, SessionRecord

__all__ = ["SessionLog"]


class SessionLog:
    """Sessions and their attempts in the gateway's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, session_id: str, kind: str, key_id: str | None) -> None:
        """Record a session once (later calls for the same id do nothing)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(SessionRecord).values(
                        id=session_id, kind=kind, key_id=key_id, created_at=utcnow()
                    )
                )
        except IntegrityError:
            pass

    def attempt(
        self,
        session_id: str,
        seq: int,
        attempt: int,
        orchestrator: str,
        latency_s: float,
        outcome: str,
        *,
        price: tuple[int, int],
        pixels: int = 0,
        cost: int = 0,
        error_code: str | None = None,
        error: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(SegmentAttempt).values(
                    session_id=session_id,
                    seq=seq,
                    attempt=attempt,
                    orchestrator=orchestrator,
                    started_at=utcnow(),
                    latency_s=latency_s,
                    outcome=outcome,
                    error_code=error_code,
                    error=error,
                    price_per_unit=price[0],
                    pixels_per_unit=price[1],
                    pixels=pixels,
                    cost=cost,
                )
            )

    def get(self, session_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            session = conn.execute(
                select(SessionRecord).where(SessionRecord.id == session_id)
            ).first()
            if session is None:
                raise NotFound(f"no session {session_id!r}")
            rows = conn.execute(
                select(SegmentAttempt)
                .where(SegmentAttempt.session_id == session_id)
                .order_by(SegmentAttempt.id)
            ).all()
        return {
            "id": session.id,
            "kind": session.kind,
            "key_id": session.key_id,
            "created_at": session.created_at.isoformat(),
            "attempts": [
                {
                    "seq": r.seq,
                    "attempt": r.attempt,
                    "orchestrator": r.orchestrator,
                    "latency_s": round(r.latency_s, 4),
                    "outcome": r.outcome,
                    "error_code": r.error_code,
                    "error": r.error,
                    "price_per_unit": int(r.price_per_unit),
                    "pixels_per_unit": int(r.pixels_per_unit),
                    "pixels": int(r.pixels),
                    "cost": int(r.cost),
                }
                for r in rows
            ],
        }

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(SessionRecord).order_by(SessionRecord.created_at.desc()).limit(limit)
            ).all()
        return [
            {"id": r.id, "kind": r.kind, "key_id": r.key_id, "created_at": r.created_at.isoformat()}
            for r in rows
        ]

    def active_streams(self, within_s: float = 60.0, scan: int = 10_000) -> int:
        """Live streams with a segment attempt in the last ``within_s`` seconds (among the
        latest ``scan`` attempts, so a scrape stays cheap on a long log)."""
        since = utcnow() - timedelta(seconds=within_s)
        recent = (
            select(SegmentAttempt.session_id, SegmentAttempt.started_at)
            .order_by(SegmentAttempt.id.desc())
            .limit(scan)
            .subquery()
        )
        query = (
            select(func.count(distinct(recent.c.session_id)))
            .join(SessionRecord, SessionRecord.id == recent.c.session_id)
            .where(recent.c.started_at >= since, SessionRecord.kind == "live")
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
