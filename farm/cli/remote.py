"""Remote transcoder commands: ``farm transcoder`` and ``farm transcoders``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from farm.cli.cluster import _load
from farm.settings import NodeSettings, TranscoderSettings

__all__ = ["transcoder_cmd", "transcoders_group"]


@click.command("transcoder")
@click.option("--orch-addr", required=True, help="HOST:PORT of the orchestrator's node API.")
@click.option(
    "--orch-secret", required=True, help="The orchSecret, or the path of a file holding it."
)
@click.option("--gpus", default=None, help="all, none, or GPU indices like 0,1 (default all).")
@click.option("--capacity", type=int, default=None, help="Segments in parallel (default 1).")
@click.option("--region", default=None, help="Region to advertise (default local).")
@click.option(
    "--orch-cert-fingerprint",
    default=None,
    help="SHA-256 fingerprint of the node's certificate (farm transcoders fingerprint).",
)
@click.option(
    "--orch-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CA (or the node's certificate) to verify the node with.",
)
@click.option("--loglevel", default="INFO", show_default=True)
def transcoder_cmd(
    orch_addr: str,
    orch_secret: str,
    gpus: str | None,
    capacity: int | None,
    region: str | None,
    orch_cert_fingerprint: str | None,
    orch_ca: Path | None,
    loglevel: str,
) -> None:
    """Attach this machine to an orchestrator as a remote transcoder (go-livepeer -orchAddr)."""
    from farm.remote.transcoder import run_transcoder

    settings: TranscoderSettings = _load(
        TranscoderSettings,
        orch_addr=orch_addr,
        orch_secret=orch_secret,
        gpus=gpus,
        capacity=capacity,
        region=region,
        orch_cert_fingerprint=orch_cert_fingerprint,
        orch_ca=orch_ca,
    )
    sys.exit(run_transcoder(settings, loglevel=loglevel.upper()))


def _roster(settings: NodeSettings):  # type: ignore[no-untyped-def]
    from farm.registry import Registry
    from farm.remote.credentials import BrokerAcl, require_redis_broker
    from farm.remote.roster import Roster

    require_redis_broker(settings.broker_url)
    registry = Registry(settings.redis_registry_url(), settings.heartbeat_s)
    return Roster(registry, BrokerAcl(settings.broker_url), settings.transcoder_credential_ttl_s)


@click.group("transcoders", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def transcoders_group(ctx: click.Context, as_json: bool) -> None:
    """Attached transcoders: list them (the default), evict one, show the pin they need."""
    if ctx.invoked_subcommand is not None:
        return
    settings: NodeSettings = _load(NodeSettings)
    from farm.errors import RemoteUnsupported
    from farm.golivepeer.records import TranscoderRecords

    records: list[dict[str, Any]] = []
    try:
        records = [{**r.public(), "kind": "farm"} for r in _roster(settings).all()]
    except RemoteUnsupported as e:  # go-livepeer transcoders attach with any broker
        click.echo(f"farm transcoder: {e}", err=True)
    golivepeer_records = TranscoderRecords(settings.redis_registry_url())
    try:
        golivepeer = [{**t, "kind": "golivepeer"} for t in golivepeer_records.attached()]
        banned = golivepeer_records.banned()
    finally:
        golivepeer_records.close()
    if as_json:
        click.echo(json.dumps(records + golivepeer, indent=2))
        return
    for host, ban in sorted(banned.items()):
        left = max(0.0, float(ban["until"]) - time.time())
        click.echo(f"go-livepeer host {host}: {ban.get('reason', 'evicted')}, {left:.0f}s left")
    if not records and not golivepeer:
        click.echo("no transcoder has attached")
        return
    now = time.time()
    head = ("id", "state", "region", "load", "queues", "gpus", "heartbeat", "segments", "pixels")
    rows = [
        (
            r["id"],
            r["state"],
            r["region"],
            f"{r['load']}/{r['capacity']}",
            ",".join(r["queues"]),
            str(len(r["gpus"])),
            f"{max(0.0, now - r['last_heartbeat']):.0f}s ago",
            str(r["segments"]),
            str(r["pixels"]),
        )
        for r in records
    ]
    # go-livepeer transcoders: segments and pixels are their host's totals, which outlive
    # the node that served them (farm.golivepeer.records).
    rows += [
        (
            f"{t['name']}@{t['host']}",
            "active",
            "-",
            f"{t['load']}/{t['capacity']}",
            "go-livepeer",
            "-",
            f"{max(0.0, now - t['seen_at']):.0f}s ago",
            str(t["total_segments"]),
            str(t["total_pixels"]),
        )
        for t in golivepeer
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    for row in (head, *rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@transcoders_group.command("evict")
@click.argument("transcoder_id")
@click.option(
    "--ban",
    "ban_s",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    help="go-livepeer transcoders: seconds their host is refused (they register again at once).",
)
def evict_cmd(transcoder_id: str, ban_s: float) -> None:
    """Revoke a transcoder's credential and cut its connections; its work goes elsewhere.

    A go-livepeer transcoder (golivepeer-NAME, or golivepeer@HOST for every one on a host)
    is dropped by its node and its host refused for --ban seconds (farm transcoders unban).
    """
    settings: NodeSettings = _load(NodeSettings)
    if transcoder_id.startswith("golivepeer"):
        _evict_golivepeer(settings, transcoder_id, ban_s)
        return
    record = _roster(settings).revoke(transcoder_id.removeprefix("transcoder-"))
    if record is None:
        raise click.ClickException(f"no transcoder {transcoder_id!r}")
    click.echo(f"evicted {record.name}: credential revoked, connections closed")


def _evict_golivepeer(settings: NodeSettings, transcoder_id: str, ban_s: float) -> None:
    from farm.golivepeer.records import TranscoderRecords

    golivepeer_records = TranscoderRecords(settings.redis_registry_url())
    try:
        if transcoder_id.startswith("golivepeer@"):
            host = transcoder_id.removeprefix("golivepeer@")
            if not host:
                raise click.ClickException("golivepeer@HOST needs a host")
        else:
            name = transcoder_id.split("@", 1)[0]
            found = [t for t in golivepeer_records.attached() if t["name"] == name]
            if not found:
                raise click.ClickException(
                    f"no go-livepeer transcoder {transcoder_id!r} is attached "
                    "(golivepeer@HOST bans a host that is not)"
                )
            host = str(found[0]["host"])
        until = golivepeer_records.ban(host, ban_s)
    finally:
        golivepeer_records.close()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
    click.echo(
        f"evicted go-livepeer host {host}: its transcoders are dropped at their node's next "
        f"heartbeat and refused until {when}"
    )


@transcoders_group.command("unban")
@click.argument("host")
def unban_cmd(host: str) -> None:
    """Let an evicted go-livepeer host's transcoders attach again."""
    from farm.golivepeer.records import TranscoderRecords

    settings: NodeSettings = _load(NodeSettings)
    golivepeer_records = TranscoderRecords(settings.redis_registry_url())
    try:
        lifted = golivepeer_records.unban(host.removeprefix("golivepeer@"))
    finally:
        golivepeer_records.close()
    if not lifted:
        raise click.ClickException(f"go-livepeer host {host!r} is not banned")
    click.echo(f"go-livepeer host {host.removeprefix('golivepeer@')} may attach again")


@transcoders_group.command("fingerprint")
def fingerprint_cmd() -> None:
    """The SHA-256 fingerprint of the node's certificate, for --orch-cert-fingerprint."""
    from farm.node.serve import node_certificate

    settings: NodeSettings = _load(NodeSettings, tls=True)
    cert, _, pin = node_certificate(settings)
    click.echo(pin)
    click.echo(f"({cert})", err=True)
