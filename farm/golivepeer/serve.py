"""Serving the node API with go-livepeer transcoders: hypercorn, TLS, HTTP/2 and HTTP/1.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

from farm.settings import NodeSettings

__all__ = ["hypercorn_config", "serve_node"]


def hypercorn_config(settings: NodeSettings, certfile: Path, keyfile: Path) -> object:
    """hypercorn's configuration: one TLS listener offering h2 (gRPC) and http/1.1 by ALPN."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.certfile = str(certfile)
    config.keyfile = str(keyfile)
    config.alpn_protocols = ["h2", "http/1.1"]
    # gRPC streams stay open for as long as a transcoder is attached; do not wait long.
    config.graceful_timeout = 3.0
    config.keep_alive_timeout = 75.0
    config.accesslog = None
    return config


def serve_node(settings: NodeSettings, certfile: Path, keyfile: Path) -> None:
    """Run the node API with go-livepeer transcoders until SIGINT or SIGTERM."""
    import logging

    from hypercorn.asyncio import serve

    from farm.golivepeer import with_golivepeer
    from farm.node.app import create_node_app

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    app = with_golivepeer(create_node_app(settings), settings)
    config = hypercorn_config(settings, certfile, keyfile)
    asyncio.run(serve(app, config))  # type: ignore[arg-type]
