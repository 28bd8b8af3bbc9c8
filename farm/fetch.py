"""Fetching a URL on a caller's behalf without letting the caller reach the operator's network.

A URL a caller hands the farm (a task's input, a result a runner links to) could name
loopback, the cloud's metadata service (169.254.169.254), a private range, or a host whose
name resolves to one of them. :class:`SafeFetcher` resolves the host itself, refuses any
address that is not public unicast (IPv4 and IPv6, IPv4 embedded in IPv6 included), and
connects to the very address it checked, so a name cannot resolve to a public address for the
check and to a private one for the connection. Redirects are followed here, one hop at a
time, each hop checked the same way.

The operator's own storage may live on a private network: ``FARM_FETCH_ALLOW`` lists the
networks (CIDR) and host names that are fetched all the same.

Every failure reaches the caller as the one :class:`~farm.errors.FetchFailed` message, so
that the answers cannot map which internal addresses and ports exist; the reason goes to the
log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin

import httpcore
import httpx

from farm.errors import FetchFailed

__all__ = ["FetchPolicy", "Refused", "SafeFetcher", "is_public"]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The message every failed fetch is answered with.
GENERIC = "the URL could not be fetched"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class Refused(Exception):
    """Raised when a URL's host is, or resolves to, an address the policy does not allow."""


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (v4-mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a public unicast address: not loopback, private, link-local,
    multicast, unspecified, reserved or shared (nor an IPv6 address carrying such an IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not is_public(inner):
            return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_reserved
        or ip.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Which non-public destinations may be fetched all the same (``FARM_FETCH_ALLOW``)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> FetchPolicy:
        """A policy from CIDRs, single addresses and host names (ValueError on a bad one)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or not all(p and p.isascii() for p in entry.split(".")):
                    raise ValueError(f"not a network or a host name: {entry!r}") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def with_hosts(self, *hosts: str) -> FetchPolicy:
        """This policy, also allowing ``hosts``."""
        return FetchPolicy(self.networks, self.hosts | {h.lower().rstrip(".") for h in hosts})

    def allows(self, ip: IPAddress, host: str) -> bool:
        if host.lower().rstrip(".") in self.hosts or is_public(ip):
            return True
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_v4(ip)) is not None:
            candidates.append(inner)
        return any(c in n for c in candidates for n in self.networks if c.version == n.version)

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` that may be connected to; Refused when there are none."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise Refused(f"cannot resolve {host!r}: {e}") from e
        allowed: list[str] = []
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not self.allows(ip, host):
                # One refused address refuses the name: a resolver that mixes public and
                # internal answers is not to be trusted with either.
                raise Refused(f"{host!r} resolves to {ip}, which is not a public address")
            allowed.append(str(ip))
        if not allowed:
            raise Refused(f"{host!r} has no address")
        return allowed


class _GuardedBackend(httpcore.SyncBackend):
    """Opens TCP connections only to addresses the policy allows, checked at connect time."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        assert last is not None
        raise last


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over the guarded backend; TLS still checks the URL's host name."""

    def __init__(self, policy: FetchPolicy, verify: bool = True) -> None:
        super().__init__(trust_env=False, retries=0)
        unguarded = self._pool
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._pool = httpcore.ConnectionPool(
            ssl_context=context, network_backend=_GuardedBackend(policy)
        )
        unguarded.close()


class SafeFetcher:
    """GETs caller-supplied http(s) URLs under a :class:`FetchPolicy` (see the module doc)."""

    def __init__(
        self,
        policy: FetchPolicy,
        timeout: httpx.Timeout | float = _TIMEOUT,
        max_redirects: int = 5,
        *,
        verify: bool = True,
    ) -> None:
        """``verify=False`` skips TLS certificate checks (go-livepeer's segment fetch does);
        the address checks stay."""
        self.policy = policy
        self.max_redirects = max_redirects
        self._client = httpx.Client(
            transport=_GuardedTransport(policy, verify),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    @contextmanager
    def stream(self, url: str) -> Iterator[httpx.Response]:
        """The final response for ``url`` (after redirects), open for streaming its body.

        Raises FetchFailed, with the one generic message, when a URL of the chain is not
        http(s), names a refused address, cannot be reached, or redirects too often; any
        status other than a redirect is the caller's to judge."""
        try:
            with self._open(url) as response:
                yield response
        except (Refused, httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as e:
            log.info("fetch of %.200s refused or failed: %s", url, e)
            raise FetchFailed(GENERIC) from e

    @contextmanager
    def _open(self, url: str) -> Iterator[httpx.Response]:
        for _ in range(self.max_redirects + 1):
            target = httpx.URL(url)
            if target.scheme not in ("http", "https") or not target.host:
                raise Refused(f"not an http(s) URL: {url[:200]!r}")
            response = self._client.send(self._client.build_request("GET", target), stream=True)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or location is None:
                try:
                    yield response
                finally:
                    response.close()
                return
            response.close()
            url = urljoin(str(target), location)
        raise Refused(f"more than {self.max_redirects} redirects")

    def close(self) -> None:
        self._client.close()
