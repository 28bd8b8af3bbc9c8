"""Operations commands: ``farm exporter`` and ``farm status``."""

from __future__ import annotations

import time

import click

from farm.cli.listen import ensure_free
from farm.cli.options import ADMIN_TOKEN, GATEWAY_URL, NODE_CA, NODE_FINGERPRINT, NODE_URL

__all__ = ["exporter_cmd", "status_cmd"]


def _gateway_token(given: str | None) -> str | None:
    """The admin token given, or in development the one farm up's gateway takes."""
    if given:
        return given
    from farm.cli.cluster import _load
    from farm.settings import StatusSettings

    settings: StatusSettings = _load(StatusSettings)
    return settings.gateway_token()


@click.command("exporter")
@NODE_URL
@NODE_FINGERPRINT
@NODE_CA
@GATEWAY_URL
@ADMIN_TOKEN
@click.option(
    "--chain-url",
    envvar="FARM_ETH_RPC_URL",
    default=None,
    help="Ethereum JSON-RPC for chain state (env FARM_ETH_RPC_URL).",
)
@click.option(
    "--controller",
    envvar="FARM_ETH_CONTROLLER",
    default=None,
    help="Livepeer Controller address (env FARM_ETH_CONTROLLER).",
)
@click.option("--orchestrator", default=None, help="Orchestrator address to watch.")
@click.option("--sender", "senders", multiple=True, help="Sender address to watch (repeat).")
@click.option(
    "--ticket-queue-url",
    envvar="FARM_TICKET_QUEUE_URL",
    default=None,
    help="Database of the winning-ticket queue (env FARM_TICKET_QUEUE_URL).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option("--port", type=int, default=9153, show_default=True, help="Listen port.")
def exporter_cmd(
    node_url: str,
    node_cert_fingerprint: str | None,
    node_ca: str | None,
    gateway_url: str | None,
    admin_token: str | None,
    chain_url: str | None,
    controller: str | None,
    orchestrator: str | None,
    senders: tuple[str, ...],
    ticket_queue_url: str | None,
    host: str,
    port: int,
) -> None:
    """Serve cluster state for Prometheus at /metrics (the livepeer_exporter role)."""
    import uvicorn

    from farm.exporter import ExporterConfig, create_exporter_app

    config = ExporterConfig(
        node_url or None,
        gateway_url,
        _gateway_token(admin_token),
        chain_url,
        controller=controller,
        orchestrator=orchestrator,
        senders=senders,
        ticket_queue_url=ticket_queue_url,
        node_cert_fingerprint=node_cert_fingerprint,
        node_ca=node_ca,
    )
    ensure_free(host, port, "farm exporter")
    uvicorn.run(create_exporter_app(config), host=host, port=port, log_level="warning")


@click.command("status")
@NODE_URL
@NODE_FINGERPRINT
@NODE_CA
@GATEWAY_URL
@ADMIN_TOKEN
@click.option("-w", "--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("-n", "--interval", type=click.FloatRange(0.1), default=2.0, show_default=True)
@click.option(
    "--count", type=click.IntRange(0), default=0, help="With --watch, stop after N redraws."
)
def status_cmd(
    node_url: str,
    node_cert_fingerprint: str | None,
    node_ca: str | None,
    gateway_url: str | None,
    admin_token: str | None,
    watch: bool,
    interval: float,
    count: int,
) -> None:
    """Show the cluster: workers and GPUs, queues, jobs, orchestrators and sessions.

    Exits 1 when the node API cannot be read (one-shot mode).
    """
    from farm.remote.tls import NodeHttp
    from farm.status import fetch, render

    node = NodeHttp(node_url, node_ca, node_cert_fingerprint)
    drawn = 0
    token = _gateway_token(admin_token)
    while True:
        snap = fetch(node_url, gateway_url, token, node=node)
        text = render(snap)
        if watch:
            # Home the cursor and clear the screen: a live view without curses.
            click.echo("\x1b[H\x1b[2J" + text, nl=False)
        else:
            click.echo(text, nl=False)
            if snap.node is None:
                raise click.ClickException(
                    f"node API at {node_url} unreachable: {snap.node_error} "
                    "(--node-url or FARM_NODE_URL names it)"
                )
            return
        drawn += 1
        if count and drawn >= count:
            return
        time.sleep(interval)
