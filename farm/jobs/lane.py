"""The job table's per-segment statements on psycopg directly, on connections kept for them.

Every segment makes three writes on its path: the job row before the publish, the claim, and
the completion (farm.jobs.pg). Each follows an idle wait in its process (the client waited
for the last result, the worker for the engine), and after such a wait SQLAlchemy's
``Connection.execute`` costs about 0.6 ms more of CPU than psycopg's own ``execute``: the pool's
checkout and its events, the isolation level set and reset, parameter processing and the
result's wrapping, all run cold. Measured on the 2-core development machine, an autocommit
insert after a 200 ms sleep took 1.54 ms through SQLAlchemy and 0.92 ms through psycopg
(0.87 against 0.36 ms of the client's CPU); hot, both are under 0.4 ms.

So on PostgreSQL these statements go to psycopg as prepared statements, in autocommit, on a
small last-in-first-out stack of connections (the one used last is the one most likely
still warm). The rest of the job store stays on SQLAlchemy. What callers see does not change:
a psycopg error comes back as SQLAlchemy's DBAPIError of the same kind (IntegrityError,
OperationalError, ...), so ``is_unreachable`` and the store's own handling read it as before,
and a connection that sat idle is pinged before use, as the engine's pool does
(farm.jobs.store.IDLE_PING_S).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

import psycopg
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, TimeoutError

__all__ = ["Lane"]


class Lane:
    """Autocommit statements on kept psycopg connections; safe to share between threads."""

    def __init__(
        self,
        url: URL,
        *,
        keep: int = 4,
        limit: int = 10,
        wait_s: float = 30.0,
        idle_ping_s: float = 1.0,
    ) -> None:
        query = dict(url.query)
        query.setdefault("connect_timeout", "5")  # as the engine's (farm.jobs.store)
        self._conninfo = url.set(drivername="postgresql", query=query).render_as_string(
            hide_password=False
        )
        self._keep, self._idle_ping_s, self._wait_s = keep, idle_ping_s, wait_s
        #: Open connections at most, as the engine's pool bounds its own (5 + 5 overflow):
        #: a burst of submitters waits for one rather than exhaust the server's.
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        #: (connection, when it was last handed back), the last one on top.
        self._idle: list[tuple[psycopg.Connection[Any], float]] = []
        self._pid = os.getpid()

    def rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; the rows it returns (none for a
        statement without RETURNING or SELECT)."""
        if not self._slots.acquire(timeout=self._wait_s):
            raise TimeoutError(f"no database connection free within {self._wait_s:g} s")
        try:
            return self._run(sql, params)
        finally:
            self._slots.release()

    def _run(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        conn = self._take(sql, params)
        try:
            cur = conn.execute(sql, params, prepare=True)
            rows = cur.fetchall() if cur.description is not None else []
        except psycopg.Error as e:
            error = _wrapped(sql, params, e, conn)
            if conn.broken or conn.closed:
                # The server went away (a restart, say): the kept connections went with it,
                # so they are dropped now rather than each failing a statement in turn, as
                # the engine's pool discards itself on a disconnect.
                self._drop(conn)
                self.close()
            else:
                self._give(conn)  # in autocommit the failed statement left nothing open
            raise error from e
        except BaseException:
            self._drop(conn)  # interrupted mid-statement: the connection's state is unknown
            raise
        self._give(conn)
        return rows

    def close(self) -> None:
        """Close the kept connections (new ones are opened on next use)."""
        with self._lock:
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        if mine:
            for conn, _ in idle:
                conn.close()

    def _take(self, sql: str, params: Mapping[str, Any]) -> psycopg.Connection[Any]:
        while True:
            with self._lock:
                if self._pid != os.getpid():
                    # A forked child: the parent's connections are not its to use or close.
                    self._idle, self._pid = [], os.getpid()
                kept = self._idle.pop() if self._idle else None
            if kept is None:
                try:
                    return psycopg.connect(self._conninfo, autocommit=True)
                except psycopg.Error as e:
                    raise _wrapped(sql, params, e, None) from e
            conn, since = kept
            if time.monotonic() - since < self._idle_ping_s:
                return conn
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                self._drop(conn)  # dead while it waited (a database restart): try the next

    def _give(self, conn: psycopg.Connection[Any]) -> None:
        if conn.closed or conn.broken:
            return
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < self._keep:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    @staticmethod
    def _drop(conn: psycopg.Connection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.close()


def _wrapped(
    sql: str, params: Mapping[str, Any], e: psycopg.Error, conn: psycopg.Connection[Any] | None
) -> DBAPIError:
    """The psycopg error as SQLAlchemy's DBAPIError subclass of the same name."""
    error = DBAPIError.instance(
        sql,
        dict(params),
        e,
        psycopg.Error,
        connection_invalidated=conn is None or conn.broken or conn.closed,
    )
    return cast(DBAPIError, error)
