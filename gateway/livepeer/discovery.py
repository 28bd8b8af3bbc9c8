"""Orchestrators found as go-livepeer's gateway finds them.

On chain: the BondingManager's transcoder pool, those active this round, at the service URI
each advertises in the ServiceRegistry (an empty or unparsable URI takes no work). By webhook
(go-livepeer's ``-orchWebhookUrl``): a GET answering ``[{"address": "https://h:p", "score":
f}]``; for live transcoding only the trusted ones (score >= 1) are taken, and the last good
answer is kept while the webhook fails.

Each source gives name -> address; the names say where an orchestrator was found. Anyone can
advertise a service URI on chain: one that names the gateway's own network (loopback, a
private range, link-local) is left out unless ``FARM_FETCH_ALLOW`` lists it, so a bonded
orchestrator cannot turn the gateway's calls on its internal services. The webhook is the
operator's own, and trusted.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from chain.service_uri import parse
from farm.protocol import AddressRefused, FetchPolicy

__all__ = ["ChainPool", "Discovery", "WebhookDiscovery", "discover"]

log = logging.getLogger(__name__)


class ChainPool(Protocol):
    """What discovery reads from the chain (chain.client.ChainClient provides it)."""

    def transcoder_pool(self, limit: int = 1000) -> list[bytes]: ...

    def is_active_transcoder(self, transcoder: bytes) -> bool: ...

    def service_uri(self, address: bytes | str) -> str: ...


def discover(
    chain: ChainPool, limit: int = 100, policy: FetchPolicy | None = None
) -> dict[str, str]:
    """Active orchestrators and their service URIs (chain-<address> -> https://host:port),
    those on addresses ``policy`` refuses (by default, any that is not public) left out."""
    policy = policy or FetchPolicy()
    found: dict[str, str] = {}
    for address in chain.transcoder_pool(limit):
        if not chain.is_active_transcoder(address):
            continue
        uri = chain.service_uri(address)
        try:
            found[f"chain-{address.hex()[:12]}"] = parse(uri).rstrip("/")
        except ValueError as e:
            log.info("orchestrator 0x%s advertises no usable URI %r: %s", address.hex(), uri, e)
            continue
        parts = urllib.parse.urlsplit(uri)
        try:
            policy.resolve(parts.hostname or "", parts.port or 443)
        except AddressRefused as e:
            del found[f"chain-{address.hex()[:12]}"]
            log.warning(
                "orchestrator 0x%s advertises %s, which is not on a public address: left out "
                "(FARM_FETCH_ALLOW lists the addresses that may be used): %s",
                address.hex(),
                uri,
                e,
            )
    return found


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class WebhookDiscovery:
    """go-livepeer's orchestrator webhook: GET, 3 s, 2xx with a JSON list; the last good answer
    is kept when it fails."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._last: dict[str, str] = {}

    def __call__(self) -> dict[str, str]:
        try:
            r = httpx.get(self.url, timeout=self.timeout_s)
            if not 200 <= r.status_code < 300:
                raise ValueError(f"HTTP {r.status_code}")
            self._last = self.parse(r.json())
        except (httpx.HTTPError, ValueError) as e:
            log.warning("orchestrator webhook: %s; keeping %d found before", e, len(self._last))
        return dict(self._last)

    @staticmethod
    def parse(body: Any) -> dict[str, str]:
        """The trusted orchestrators of a webhook answer (name -> address); ValueError when
        it is not the webhook's shape."""
        if not isinstance(body, list):
            raise ValueError("the answer is not a JSON list")
        found: dict[str, str] = {}
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("address"), str):
                raise ValueError("an entry has no address")
            score = item.get("score", 0)
            if isinstance(score, bool) or not isinstance(score, int | float) or score < 1:
                continue  # go-livepeer's live transcoding takes the trusted pool only
            parts = urllib.parse.urlsplit(item["address"].rstrip("/"))
            try:
                port = parts.port
            except ValueError:
                port = None
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
                log.info("orchestrator webhook: %r is no address", item["address"])
                continue
            address = f"{parts.scheme}://{parts.netloc}"
            name = _NAME_CHARS.sub("-", f"hook-{parts.hostname}-{port or 443}")[:64]
            found[name] = address
        return found


class Discovery:
    """The sources together: the webhook every call, the chain every ``chain_interval_s``."""

    def __init__(
        self,
        chain: Callable[[], dict[str, str]] | None,
        webhook: Callable[[], dict[str, str]] | None,
        chain_interval_s: float,
    ) -> None:
        self.chain, self.webhook = chain, webhook
        self.chain_interval_s = chain_interval_s
        self._chain: dict[str, str] = {}
        self._chain_at = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        with self._lock:
            if self.chain is not None and (
                not self._chain_at or time.monotonic() - self._chain_at >= self.chain_interval_s
            ):
                try:
                    self._chain = self.chain()
                finally:
                    self._chain_at = time.monotonic()
            found = dict(self._chain)
        if self.webhook is not None:
            for name, address in self.webhook().items():
                if address not in found.values():
                    found[name] = address
        return found
