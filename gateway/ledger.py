"""API keys and the credit ledger.

Every credit movement is an append-only ledger row with an idempotency key; the key's balance
is updated in the same transaction by a conditional statement, so it never goes negative, also
under concurrent requests: a reservation succeeds only if ``balance >= amount`` at the moment
the database applies it.

A job is paid in two steps: :meth:`Ledger.reserve` holds an estimate before it runs (sized
from the measured input, never from what the caller declares), and :meth:`Ledger.settle`
charges what it actually cost, in full. A cost above the hold takes the difference from the
balance as well; should the balance not cover all of it (the estimate fell short and the key
spent the rest meanwhile), the balance goes to zero, never below, and the shortfall is logged.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from chain.schema import create_tables
from farm.runtime import make_engine, utcnow
from gateway.errors import AuthFailed, BadRequest, InsufficientCredit, NotFound, Unavailable
from gateway.models import ApiKey, GatewayBase, LedgerEntry

__all__ = ["MAX_BALANCE", "KeyInfo", "Ledger", "hash_key"]

log = logging.getLogger(__name__)

_KEY_PREFIX = "lpf_"
#: The largest balance a key can hold (the BIGINT column's range); larger amounts are refused.
MAX_BALANCE = 2**63 - 1


def hash_key(raw: str) -> str:
    # Keys are 32 random bytes: a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as the rest of the gateway sees it (never the secret itself)."""

    id: str
    name: str
    balance: int
    created_at: datetime
    revoked: bool


class Ledger:
    """Keys, balances and ledger entries in SQL (PostgreSQL, or SQLite embedded)."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = (
            make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        )

    def create_schema(self) -> None:
        create_tables(GatewayBase.metadata, self.engine)

    # -- keys ------------------------------------------------------------------------------
    def create_key(self, name: str, credits: int = 0) -> tuple[str, KeyInfo]:
        """A new key and its info; the raw key is returned once and never stored."""
        raw = _KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = uuid.uuid4().hex[:16]
        with self.engine.begin() as conn:
            conn.execute(
                insert(ApiKey).values(
                    id=key_id, name=name, key_hash=hash_key(raw), balance=0, created_at=utcnow()
                )
            )
        if credits:
            self.topup(key_id, credits, idempotency_key=f"create:{key_id}")
        return raw, self.key(key_id)

    def key(self, key_id: str) -> KeyInfo:
        with self.engine.connect() as conn:
            row = conn.execute(select(ApiKey).where(ApiKey.id == key_id)).first()
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        return KeyInfo(
            row.id, row.name, int(row.balance), row.created_at, row.revoked_at is not None
        )

    def list_keys(self) -> list[KeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ApiKey).order_by(ApiKey.created_at)).all()
        return [
            KeyInfo(r.id, r.name, int(r.balance), r.created_at, r.revoked_at is not None)
            for r in rows
        ]

    def revoke(self, key_id: str) -> KeyInfo:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow())
            ).rowcount
        if not done:
            raise NotFound(f"no API key {key_id!r}")
        return self.key(key_id)

    def authenticate(self, raw: str) -> str:
        """The key id for a raw bearer key; AuthFailed when unknown or revoked.

        Read from the database on every request (one indexed lookup), never from a cache:
        a key revoked by any process (``farm keys revoke``) stops working at once."""
        digest = hash_key(raw)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.key_hash == digest)
            ).first()
        if row is None:
            raise AuthFailed("invalid API key")
        if row.revoked_at is not None:
            raise AuthFailed("API key revoked")
        return str(row.id)

    # -- credit ----------------------------------------------------------------------------
    def _move(
        self,
        key_id: str,
        amount: int,
        kind: str,
        ref: str,
        idempotency_key: str,
        require_funds: bool,
        cap_balance: bool = False,
    ) -> bool:
        """Apply one ledger entry; False when its idempotency key was already used.

        ``require_funds`` refuses a debit the balance cannot cover; ``cap_balance`` a credit
        that would take the balance past :data:`MAX_BALANCE`."""
        stmt = update(ApiKey).where(ApiKey.id == key_id)
        if require_funds:
            stmt = stmt.where(ApiKey.balance >= -amount, ApiKey.revoked_at.is_(None))
        if cap_balance:
            stmt = stmt.where(ApiKey.balance <= MAX_BALANCE - amount)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(LedgerEntry).values(
                        key_id=key_id,
                        amount=amount,
                        kind=kind,
                        ref=ref,
                        idempotency_key=idempotency_key,
                        created_at=utcnow(),
                    )
                )
                changed = conn.execute(stmt.values(balance=ApiKey.balance + amount)).rowcount
                if not changed:
                    raise _Rollback
        except IntegrityError:
            return False  # the same movement was already recorded
        except _Rollback:
            if require_funds:
                raise self._short(key_id, -amount) from None
            balance = self.key(key_id).balance  # NotFound when there is no such key
            raise BadRequest(
                f"the balance {balance} plus {amount} would exceed the maximum {MAX_BALANCE}"
            ) from None
        return True

    def _short(self, key_id: str, amount: int) -> AuthFailed | InsufficientCredit:
        info = self.key(key_id)
        if info.revoked:  # revoked while the request was on its way: not a matter of credit
            return AuthFailed("API key revoked")
        return InsufficientCredit(
            f"insufficient credit: the job needs {amount} and the key has {info.balance}"
        )

    def topup(self, key_id: str, amount: int, idempotency_key: str | None = None) -> KeyInfo:
        if not 0 < amount <= MAX_BALANCE:
            raise BadRequest(f"a top-up must be between 1 and {MAX_BALANCE}")
        self._move(
            key_id,
            amount,
            "topup",
            "topup",
            idempotency_key or uuid.uuid4().hex,
            False,
            cap_balance=True,
        )
        return self.key(key_id)

    def reserve(self, key_id: str, amount: int, ref: str) -> None:
        """Hold ``amount`` for job ``ref``; InsufficientCredit when the balance is short."""
        if amount > MAX_BALANCE:
            raise self._short(key_id, amount)  # no balance can cover it
        if amount > 0:
            self._move(key_id, -amount, "reserve", ref, f"{ref}:reserve", True)

    def settle(self, key_id: str, reserved: int, actual: int, ref: str) -> int:
        """Charge the job's actual cost and return what was charged: the rest of the hold is
        given back, and a cost above it is taken from the balance, down to zero at most (see
        the module's docstring)."""
        if actual <= reserved:
            self._move(key_id, reserved - actual, "settle", ref, f"{ref}:final", False)
            return actual
        extra = actual - reserved
        # Compare-and-set on the balance, so that the entry records exactly what was taken.
        for _ in range(100):
            balance = self.key(key_id).balance
            taken = min(extra, max(0, balance))
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(LedgerEntry).values(
                            key_id=key_id,
                            amount=-taken,
                            kind="settle",
                            ref=ref,
                            idempotency_key=f"{ref}:final",
                            created_at=utcnow(),
                        )
                    )
                    changed = conn.execute(
                        update(ApiKey)
                        .where(ApiKey.id == key_id, ApiKey.balance == balance)
                        .values(balance=ApiKey.balance - taken)
                    ).rowcount
                    if not changed:
                        raise _Rollback
            except IntegrityError:
                return reserved - self._final_amount(ref)  # settled before: that stands
            except _Rollback:
                continue  # the balance moved meanwhile: read it again
            if taken < extra:
                short = extra - taken
                log.warning(
                    "job %s cost %d, %d more than key %s could pay", ref, actual, short, key_id
                )
            return reserved + taken
        raise Unavailable("the ledger is too busy to settle the job; try again")

    def _final_amount(self, ref: str) -> int:
        with self.engine.connect() as conn:
            amount = conn.execute(
                select(LedgerEntry.amount).where(LedgerEntry.idempotency_key == f"{ref}:final")
            ).scalar_one()
        return int(amount)

    def release(self, key_id: str, reserved: int, ref: str) -> None:
        """Give back a failed job's reservation (a no-op if it was already settled)."""
        self._move(key_id, reserved, "release", ref, f"{ref}:final", False)

    def entries(self, key_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(LedgerEntry).where(LedgerEntry.key_id == key_id).order_by(LedgerEntry.id)
            ).all()
        return [
            {
                "amount": int(r.amount),
                "kind": r.kind,
                "ref": r.ref,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]


class _Rollback(Exception):
    """Internal: abort the ledger transaction."""
