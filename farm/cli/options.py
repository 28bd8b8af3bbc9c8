"""Command-line options that several farm commands share: where the node API and the
gateway are, and how to trust and reach them."""

from __future__ import annotations

import click

__all__ = ["ADMIN_TOKEN", "GATEWAY_URL", "NODE_CA", "NODE_FINGERPRINT", "NODE_URL"]

NODE_URL = click.option(
    "--node-url",
    envvar="FARM_NODE_URL",
    default="http://127.0.0.1:8935",
    show_default=True,
    help="The orchestrator's node API (env FARM_NODE_URL).",
)
NODE_FINGERPRINT = click.option(
    "--node-cert-fingerprint",
    envvar="FARM_NODE_CERT_FINGERPRINT",
    default=None,
    help="For an https node API: SHA-256 fingerprint of its certificate (farm transcoders "
    "fingerprint; env FARM_NODE_CERT_FINGERPRINT).",
)
NODE_CA = click.option(
    "--node-ca",
    envvar="FARM_NODE_CA",
    default=None,
    type=click.Path(dir_okay=False),
    help="For an https node API: a CA file to verify it by; its own certificate will do "
    "(env FARM_NODE_CA).",
)
GATEWAY_URL = click.option(
    "--gateway-url",
    envvar="FARM_GATEWAY_URL",
    default=None,
    help="A gateway, for its orchestrator pool and sessions (env FARM_GATEWAY_URL).",
)
ADMIN_TOKEN = click.option(
    "--admin-token",
    envvar="FARM_ADMIN_TOKEN",
    default=None,
    help="The gateway's admin token (env FARM_ADMIN_TOKEN; in development, farm up's).",
)
