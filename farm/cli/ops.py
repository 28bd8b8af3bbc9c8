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
@click.option("--node-url", help="The orchestrator's node API (env FARM_NODE_URL).")
@click.option(
    "--node-cert-fingerprint",
    help="For an https node API: SHA-256 fingerprint of its certificate (farm transcoders "
    "fingerprint; env FARM_NODE_CERT_FINGERPRINT).",
)
@click.option(
    "--node-ca",
    type=click.Path(dir_okay=False),
    help="For an https node API: a CA file to verify it by; its own certificate will do "
    "(env FARM_NODE_CA).",
)
@click.option(
    "--gateway-url",
    help="A gateway, for its orchestrator pool and sessions (env FARM_GATEWAY_URL).",
)
@click.option(
    "--admin-token",
    help="The gateway's admin token (env FARM_ADMIN_TOKEN; in development, farm up's).",
)
@click.option("--chain-url", help="Ethereum JSON-RPC for chain state (env FARM_ETH_RPC_URL).")
@click.option("--controller", help="Livepeer Controller address (env FARM_ETH_CONTROLLER).")
@click.option(
    "--orchestrator", help="Orchestrator address to watch (env FARM_EXPORTER_ORCHESTRATOR)."
)
@click.option("--sender", "senders", multiple=True, help="Sender address to watch (repeat).")
@click.option(
    "--ticket-queue-url",
    help="Database of the winning-ticket queue (env FARM_TICKET_QUEUE_URL).",
)
@click.option("--host", help="Listen address (default 127.0.0.1; env FARM_EXPORTER_HOST).")
@click.option("--port", type=int, help="Listen port (default 9153; env FARM_EXPORTER_PORT).")
def exporter_cmd(
    node_url: str | None,
    node_cert_fingerprint: str | None,
    node_ca: str | None,
    gateway_url: str | None,
    admin_token: str | None,
    chain_url: str | None,
    controller: str | None,
    orchestrator: str | None,
    senders: tuple[str, ...],
    ticket_queue_url: str | None,
    host: str | None,
    port: int | None,
) -> None:
    """Serve cluster state for Prometheus at /metrics (the livepeer_exporter role)."""
    import uvicorn

    from farm.cli.cluster import _load
    from farm.exporter import create_exporter_app
    from farm.settings import ExporterSettings

    settings: ExporterSettings = _load(
        ExporterSettings,
        node_url=node_url,
        node_cert_fingerprint=node_cert_fingerprint,
        node_ca=node_ca,
        gateway_url=gateway_url,
        admin_token=admin_token,
        eth_rpc_url=chain_url,
        eth_controller=controller,
        exporter_orchestrator=orchestrator,
        exporter_senders=senders or None,
        ticket_queue_url=ticket_queue_url,
        exporter_host=host,
        exporter_port=port,
    )
    ensure_free(settings.exporter_host, settings.exporter_port, "farm exporter")
    app = create_exporter_app(settings)
    uvicorn.run(app, host=settings.exporter_host, port=settings.exporter_port, log_level="warning")


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
