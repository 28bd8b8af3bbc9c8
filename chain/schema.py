"""Creating SQL tables when several processes may start at once.

Each process (workers, the node, the gateway, the chain tasks) creates the tables it uses
when it first needs them. Two PostgreSQL sessions that create the same table at the same
moment both see it missing and one fails on the catalogue's unique index
(``pg_type_typname_nsp_index``). On PostgreSQL the check and the creation therefore run
under one transaction-scoped advisory lock, so the second process waits and then finds the
tables there. SQLite serialises writers itself.
"""

from __future__ import annotations

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine

__all__ = ["SCHEMA_LOCK", "create_tables"]

#: The advisory lock every table creation of the project takes (any fixed 64-bit number).
SCHEMA_LOCK = 0x6661726D5F736368  # "farm_sch"


def create_tables(metadata: MetaData, engine: Engine) -> None:
    """Create the tables of ``metadata`` that do not exist yet; safe to race."""
    if engine.dialect.name != "postgresql":
        metadata.create_all(engine)
        return
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        metadata.create_all(conn)
