"""Gateway commands: ``farm gateway``, ``farm keys``, ``farm sessions``.

The ``farm`` command is the composition root: only here does ``farm`` import ``gateway``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from farm.cli.listen import ensure_free

__all__ = ["gateway_cmd", "keys_group", "sessions_cmd"]


def _settings(**overrides: Any) -> Any:
    from farm.cli.cluster import _load
    from gateway.settings import GatewaySettings

    return _load(GatewaySettings, **overrides)


def _ledger() -> Any:
    from gateway.ledger import Ledger

    ledger = Ledger(_settings().gateway_database_url)
    ledger.create_schema()
    return ledger


@click.command("gateway")
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 9935).")
def gateway_cmd(host: str | None, port: int | None) -> None:
    """Serve the gateway: segment ingest, file transcoding, keys and credit."""
    import uvicorn

    from gateway.app import create_app

    settings = _settings(gateway_host=host, gateway_port=port)
    ensure_free(settings.gateway_host, settings.gateway_port, "farm gateway")
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
    )


@click.group("keys")
def keys_group() -> None:
    """Manage API keys and their credit."""


@keys_group.command("create")
@click.option("--name", default="default", show_default=True)
@click.option("--credits", type=click.IntRange(0), default=0, show_default=True)
def keys_create(name: str, credits: int) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    raw, info = _ledger().create_key(name, credits)
    click.echo(json.dumps({"id": info.id, "name": info.name, "balance": info.balance, "key": raw}))


@keys_group.command("topup")
@click.argument("key_id")
@click.argument("amount", type=click.IntRange(1))
@click.option("--idempotency-key", default=None, help="Apply this top-up at most once.")
def keys_topup(key_id: str, amount: int, idempotency_key: str | None) -> None:
    """Add credit to a key."""
    info = _ledger().topup(key_id, amount, idempotency_key)
    click.echo(json.dumps({"id": info.id, "balance": info.balance}))


@keys_group.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key."""
    info = _ledger().revoke(key_id)
    click.echo(json.dumps({"id": info.id, "revoked": info.revoked}))


@keys_group.command("list")
def keys_list() -> None:
    """Every key with its balance."""
    for k in _ledger().list_keys():
        click.echo(
            json.dumps({"id": k.id, "name": k.name, "balance": k.balance, "revoked": k.revoked})
        )


@click.command("sessions")
@click.argument("session_id", required=False)
def sessions_cmd(session_id: str | None) -> None:
    """Recent sessions, or one session's attempt log."""
    from chain.schema import create_tables
    from farm.jobs import make_engine
    from gateway.models import GatewayBase
    from gateway.sessions import SessionLog

    engine = make_engine(_settings().gateway_database_url)
    create_tables(GatewayBase.metadata, engine)
    log = SessionLog(engine)
    if session_id:
        click.echo(json.dumps(log.get(session_id), indent=2))
    else:
        for s in log.recent():
            click.echo(json.dumps(s))
