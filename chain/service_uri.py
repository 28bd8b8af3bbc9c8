"""The service URI an orchestrator advertises in the ServiceRegistry.

Gateways read it with ``ServiceRegistry.getServiceURI`` and reach the orchestrator there:
gRPC to its host and port, and ``<uri>/segment`` built by appending to the string, so a path,
query or trailing slash would break them. :func:`parse_service_uri` accepts exactly
``https://HOST:PORT`` (a DNS name, an IPv4 address or a bracketed IPv6 address, and an
explicit port) and refuses everything else with one clear line; nothing is sent then.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from chain.errors import ChainError

__all__ = ["DEFAULT_DEV_SERVICE_URI", "MAX_SERVICE_URI_LENGTH", "InvalidServiceURI", "parse"]

#: What ``farm chain dev`` advertises for its orchestrator unless told otherwise.
DEFAULT_DEV_SERVICE_URI: Final = "https://127.0.0.1:8935"
#: Longer than any real host and port; keeps a pasted document off chain.
MAX_SERVICE_URI_LENGTH: Final = 300

_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)
_FORM: Final = "give https://HOST:PORT, e.g. https://orch.example.com:8935"


class InvalidServiceURI(ChainError, ValueError):
    """Raised when a service URI is not ``https://HOST:PORT``; nothing is sent."""


def _host(host: str, uri: str) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        labels = host.removesuffix(".").split(".")
        numeric = labels[-1].isdigit()  # a top-level domain is never all digits: a bad IPv4
        if len(host) > 253 or numeric or not all(_LABEL.fullmatch(label) for label in labels):
            raise InvalidServiceURI(f"{uri!r}: {host!r} is not a host name or address") from None
        return
    if ip.is_unspecified:
        raise InvalidServiceURI(f"{uri!r}: {host} is no address a gateway can reach; {_FORM}")


def parse(uri: str) -> str:
    """``uri`` when it is ``https://HOST:PORT``; InvalidServiceURI (one line) otherwise."""
    if not uri:
        raise InvalidServiceURI(f"the service URI is empty; {_FORM}")
    if len(uri) > MAX_SERVICE_URI_LENGTH:
        raise InvalidServiceURI(f"the service URI is over {MAX_SERVICE_URI_LENGTH} characters")
    shown = uri if uri.isprintable() and uri.strip() == uri else repr(uri)
    if not uri.isprintable() or any(c.isspace() for c in uri):
        raise InvalidServiceURI(f"{shown} holds spaces or control characters; {_FORM}")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as e:
        raise InvalidServiceURI(f"{shown} is not a URL ({e}); {_FORM}") from None
    if parts.scheme.lower() != "https":
        got = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise InvalidServiceURI(f"{shown}: gateways connect over https, not {got}; {_FORM}")
    if parts.username is not None or parts.password is not None:
        raise InvalidServiceURI(f"{shown}: no user or password in a service URI; {_FORM}")
    host = parts.hostname
    if not host:
        raise InvalidServiceURI(f"{shown} has no host; {_FORM}")
    if port is None or port == 0:
        raise InvalidServiceURI(f"{shown} has no port; {_FORM}")
    if parts.path or parts.query or parts.fragment or uri.endswith(("?", "#")):
        raise InvalidServiceURI(
            f"{shown}: no path, query or fragment (gateways append /segment); {_FORM}"
        )
    _host(host, shown)
    return uri
