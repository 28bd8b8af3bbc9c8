"""Serving the node API with hypercorn: HTTPS with HTTP/2 and HTTP/1.1 on one port.

hypercorn rather than uvicorn because one TLS listener carries both the HTTPS API and the gRPC
stream go-livepeer transcoders register on (go-livepeer serves both on its service port,
node.md section 1, farm.golivepeer): hypercorn speaks HTTP/2 with ALPN and sends response
trailers, which gRPC needs. Without TLS it serves plain
HTTP/1.1 (and HTTP/2 over cleartext) for local consumers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

from farm.remote.tls import ensure_certificate, fingerprint_of_file
from farm.settings import NodeSettings

__all__ = ["hypercorn_config", "node_asgi_app", "node_certificate", "serve_node"]

log = logging.getLogger(__name__)


def node_certificate(settings: NodeSettings) -> tuple[str, str, str]:
    """(cert path, key path, SHA-256 fingerprint) the node serves; made once when not given."""
    hosts = tuple(h for h in (settings.host, *settings.tls_hosts) if h)
    cert, key = ensure_certificate(settings.tls_dir, hosts, settings.tls_cert, settings.tls_key)
    return str(cert), str(key), fingerprint_of_file(Path(cert))


def hypercorn_config(settings: NodeSettings) -> Any:
    """hypercorn's Config for the node: bind, TLS and ALPN (h2, http/1.1)."""
    from hypercorn.config import Config

    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5.0
    # Gateways keep their connection between segments and calls; hypercorn's 5 s default
    # closes it under a gRPC client between two calls (go-livepeer's net/http keeps idle
    # connections 90 s).
    config.keep_alive_timeout = 90.0
    if settings.tls:
        config.certfile, config.keyfile, _ = node_certificate(settings)
    return config


def node_asgi_app(settings: NodeSettings) -> Any:
    """The ASGI application the node's listener serves: the place to put anything that must
    share the port with the node API (a gRPC service dispatched on its content type)."""
    from farm.node import create_node_app
    from farm.node.golivepeer import with_golivepeer

    app = create_node_app(settings)
    if settings.tls:
        # go-livepeer transcoders dial TLS; their gRPC stream shares the port (farm.golivepeer).
        return with_golivepeer(app, settings)
    if app.state.orchestrator is not None:
        # A gateway's net.Orchestrator calls over cleartext HTTP/2 (an http:// service URI).
        from farm.golivepeer.hub import Hub
        from farm.node.grpc_mount import GrpcMount

        return GrpcMount(app, Hub(), None, orchestrator=app.state.orchestrator)
    return app


class _TransportClosed(Exception):
    """Raised out of the app when sending on a connection whose TLS has ended."""


def quiet_tls_teardown(app: Any) -> Any:
    """``app``, with a TLS connection that ends under a response taken as the client's doing.

    When the node answers before reading a large body (a refusal mid-upload), it closes the
    connection while the client is still sending; OpenSSL then reports the client's bytes after
    its close_notify, from the response's last send and again from the connection's close.
    hypercorn would log both as unhandled errors: they are logged here at debug instead."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def guarded(message: Any) -> None:
            try:
                await send(message)
            except ssl.SSLError as e:
                raise _TransportClosed(str(e)) from e

        try:
            await app(scope, receive, guarded)
        except _TransportClosed as e:
            log.debug("%s: connection closed under the response: %s", scope.get("path"), e)

    return wrapped


def _loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's handler: a TLS connection's close failing is logged at debug (as above), as
    asyncio's own transports log the OSErrors of a connection."""
    if isinstance(context.get("exception"), ssl.SSLError):
        log.debug("connection closed: %s", context["exception"])
        return
    loop.default_exception_handler(context)


def serve_node(settings: NodeSettings) -> None:
    """Serve the node API until SIGTERM or SIGINT."""
    from hypercorn.asyncio import serve

    config = hypercorn_config(settings)
    scheme = "https" if settings.tls else "http"
    print(f"farm node: serving {scheme}://{config.bind[0]}", flush=True)
    if settings.tls:
        pin = node_certificate(settings)[2]
        print(f"farm node: certificate {config.certfile} sha256 {pin}", flush=True)
        log.warning("node certificate sha256 fingerprint %s", pin)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.set_exception_handler(_loop_errors)
        app = quiet_tls_teardown(node_asgi_app(settings))
        await serve(app, config, shutdown_trigger=stop.wait)

    asyncio.run(main())
