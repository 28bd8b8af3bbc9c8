"""Orchestrators found on chain, as go-livepeer's gateway finds them: the BondingManager's
transcoder pool, those active this round, at the service URI each advertises in the
ServiceRegistry (an empty or unparsable URI takes no work)."""

from __future__ import annotations

import logging
from typing import Protocol

from chain.service_uri import parse

__all__ = ["ChainPool", "discover"]

log = logging.getLogger(__name__)


class ChainPool(Protocol):
    """What discovery reads from the chain (chain.client.ChainClient provides it)."""

    def transcoder_pool(self, limit: int = 1000) -> list[bytes]: ...

    def is_active_transcoder(self, transcoder: bytes) -> bool: ...

    def service_uri(self, address: bytes | str) -> str: ...


def discover(chain: ChainPool, limit: int = 100) -> dict[bytes, str]:
    """Active orchestrators and their service URIs (address -> https://host:port)."""
    found: dict[bytes, str] = {}
    for address in chain.transcoder_pool(limit):
        if not chain.is_active_transcoder(address):
            continue
        uri = chain.service_uri(address)
        try:
            found[address] = parse(uri).rstrip("/")
        except ValueError as e:
            log.info("orchestrator 0x%s advertises no usable URI %r: %s", address.hex(), uri, e)
    return found
