"""Checking a listen address before a server says it serves there."""

from __future__ import annotations

import socket

from farm.errors import ConfigError

__all__ = ["PortInUse", "ensure_free"]


class PortInUse(ConfigError):
    """Raised when a server's listen port is taken by another process."""

    code = "port_in_use"


def ensure_free(host: str, port: int, what: str) -> None:
    """Raise :class:`PortInUse`, naming the port, when nothing could listen on ``host:port``.

    Binds and closes a socket the way the servers bind theirs (``SO_REUSEADDR``, so a port
    left in TIME_WAIT is free). A port that another process takes in between still fails in
    the server itself; this check turns the common case into one clear line.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"{what}: cannot listen on {host!r}: {e.strerror}") from e
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise PortInUse(
                f"{what}: port {port} on {host} is not free ({e.strerror}); "
                "stop what listens there or choose another port"
            ) from e
