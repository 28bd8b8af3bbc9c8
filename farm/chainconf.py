"""The orchestrator's chain client, built once from its settings (None when off-chain)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from farm.errors import ConfigError
from farm.settings import ClusterSettings

if TYPE_CHECKING:
    from chain.client import ChainClient

__all__ = ["chain_client"]


def chain_client(settings: ClusterSettings, *, signing: bool = True) -> ChainClient | None:
    """A ChainClient for ``FARM_ETH_RPC_URL``/``FARM_ETH_CONTROLLER`` with the orchestrator's
    key; None when no chain is configured (go-livepeer's offchain mode).

    Raises ConfigError when the chain is half configured, or ``signing`` is asked for and
    ``FARM_ETH_PRIVATE_KEY`` is missing or malformed.
    """
    if not settings.eth_rpc_url:
        return None
    from chain.client import ChainClient, parse_address

    if not settings.eth_controller:
        raise ConfigError("FARM_ETH_RPC_URL needs FARM_ETH_CONTROLLER (the Controller address)")
    try:
        parse_address(settings.eth_controller)
    except ValueError as e:
        raise ConfigError(f"FARM_ETH_CONTROLLER: {e}") from None
    key = _private_key(settings)
    if signing and key is None:
        raise ConfigError("sending transactions needs FARM_ETH_PRIVATE_KEY")
    try:
        return ChainClient(
            settings.eth_rpc_url,
            settings.eth_controller,
            private_key=key,
            max_gas_price_wei=settings.max_gas_price_wei,
        )
    except ValueError:  # 32 bytes, but zero or beyond the curve's order
        raise ConfigError("FARM_ETH_PRIVATE_KEY is not a valid secp256k1 private key") from None


def _private_key(settings: ClusterSettings) -> bytes | None:
    """The 32 bytes of ``FARM_ETH_PRIVATE_KEY``, None when unset; ConfigError when malformed."""
    if settings.eth_private_key is None:
        return None
    try:
        key = bytes.fromhex(settings.eth_private_key.get_secret_value().removeprefix("0x"))
    except ValueError:
        raise ConfigError("FARM_ETH_PRIVATE_KEY is not a hex private key") from None
    if len(key) != 32:
        raise ConfigError(f"FARM_ETH_PRIVATE_KEY is {len(key)} bytes, a private key is 32")
    return key
