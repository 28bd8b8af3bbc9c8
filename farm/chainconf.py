"""The chain a process talks to, and the one function that builds its client.

Every process type's settings give a :class:`ChainSettings` (``ClusterSettings.chain()``,
``GatewaySettings.chain()``); :func:`chain_client` checks it and builds the ChainClient, or
returns None when no chain is configured (go-livepeer's offchain mode). The orchestrator's
services, the node API, ``farm chain``, the exporter and the gateway all build theirs here, so
a setting wrong for one is wrong for all, with the same message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from farm.errors import ConfigError

if TYPE_CHECKING:
    from chain.client import ChainClient

__all__ = ["ChainSettings", "chain_client"]

#: Seconds one JSON-RPC request may take unless the settings say otherwise.
RPC_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ChainSettings:
    """``FARM_ETH_RPC_URL``, ``FARM_ETH_CONTROLLER``, ``FARM_ETH_PRIVATE_KEY`` and the gas price
    cap, as one value; no RPC URL means off chain."""

    rpc_url: str | None = None
    controller: str | None = None
    #: The key that signs transactions; None for a read-only client.
    private_key: SecretStr | None = None
    max_gas_price_wei: int | None = None
    rpc_timeout_s: float = RPC_TIMEOUT_S


def chain_client(settings: ChainSettings, *, signing: bool = True) -> ChainClient | None:
    """A ChainClient for ``settings``; None when no chain is configured.

    Raises ConfigError when the chain is half configured (an RPC URL without the Controller),
    the Controller is not an address (or has a wrong EIP-55 checksum), the private key is
    malformed or not a secp256k1 key, the gas price cap is not positive, or ``signing`` is
    asked for without a private key.
    """
    if not settings.rpc_url:
        return None
    from chain.client import ChainClient, parse_address

    if not settings.controller:
        raise ConfigError("FARM_ETH_RPC_URL needs FARM_ETH_CONTROLLER (the Controller address)")
    try:
        parse_address(settings.controller)
    except ValueError as e:
        raise ConfigError(f"FARM_ETH_CONTROLLER: {e}") from None
    if settings.max_gas_price_wei is not None and settings.max_gas_price_wei <= 0:
        raise ConfigError("FARM_MAX_GAS_PRICE_WEI must be positive")
    if settings.rpc_timeout_s <= 0:
        raise ConfigError("the chain's RPC timeout must be positive")
    key = _private_key(settings.private_key)
    if signing and key is None:
        raise ConfigError("sending transactions needs FARM_ETH_PRIVATE_KEY")
    try:
        return ChainClient(
            settings.rpc_url,
            settings.controller,
            private_key=key,
            max_gas_price_wei=settings.max_gas_price_wei,
            rpc_timeout_s=settings.rpc_timeout_s,
        )
    except ValueError:  # 32 bytes, but zero or beyond the curve's order
        raise ConfigError("FARM_ETH_PRIVATE_KEY is not a valid secp256k1 private key") from None


def _private_key(secret: SecretStr | None) -> bytes | None:
    """The 32 bytes of the key, None when unset; ConfigError when malformed."""
    if secret is None:
        return None
    try:
        key = bytes.fromhex(secret.get_secret_value().removeprefix("0x"))
    except ValueError:
        raise ConfigError("FARM_ETH_PRIVATE_KEY is not a hex private key") from None
    if len(key) != 32:
        raise ConfigError(f"FARM_ETH_PRIVATE_KEY is {len(key)} bytes, a private key is 32")
    return key
