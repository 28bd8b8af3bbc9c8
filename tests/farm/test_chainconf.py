"""One ChainSettings and one chain_client: the same checks for every process that reads the
chain (no node is contacted: building a client sends nothing)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from chain.client import ChainClient
from farm.chainconf import ChainSettings, chain_client
from farm.errors import ConfigError
from farm.settings import ClusterSettings, ExporterSettings, NodeSettings
from gateway.settings import GatewaySettings

RPC = "http://127.0.0.1:8545"
CONTROLLER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
KEY = "0x" + "11" * 32


def test_no_rpc_url_is_off_chain() -> None:
    assert chain_client(ChainSettings()) is None
    assert chain_client(ChainSettings(controller="not even an address")) is None


def test_a_client_carries_the_settings() -> None:
    client = chain_client(
        ChainSettings(RPC, CONTROLLER, SecretStr(KEY), max_gas_price_wei=5, rpc_timeout_s=3)
    )
    assert isinstance(client, ChainClient)
    assert client.controller_address == CONTROLLER and client.max_gas_price_wei == 5
    assert client.address is not None
    read_only = chain_client(ChainSettings(RPC, CONTROLLER), signing=False)
    assert read_only is not None and read_only.address is None


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        (ChainSettings(RPC), "needs FARM_ETH_CONTROLLER"),
        (ChainSettings(RPC, "0x1234"), "FARM_ETH_CONTROLLER: '0x1234' is not an address"),
        (ChainSettings(RPC, CONTROLLER.replace("aa3", "aA3")), "wrong EIP-55 checksum"),
        (ChainSettings(RPC, CONTROLLER), "needs FARM_ETH_PRIVATE_KEY"),
        (ChainSettings(RPC, CONTROLLER, SecretStr("0xzz")), "not a hex private key"),
        (ChainSettings(RPC, CONTROLLER, SecretStr("0x1234")), "is 2 bytes"),
        (ChainSettings(RPC, CONTROLLER, SecretStr("00" * 32)), "not a valid secp256k1"),
        (ChainSettings(RPC, CONTROLLER, SecretStr(KEY), max_gas_price_wei=0), "positive"),
    ],
)
def test_every_check_refuses_with_a_config_error(settings: ChainSettings, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        chain_client(settings)


def test_a_malformed_key_is_refused_even_read_only() -> None:
    with pytest.raises(ConfigError, match="is 2 bytes"):
        chain_client(ChainSettings(RPC, CONTROLLER, SecretStr("0x1234")), signing=False)


def test_every_process_type_gives_its_chain_settings() -> None:
    cluster = ClusterSettings(
        eth_rpc_url=RPC,
        eth_controller=CONTROLLER,
        eth_private_key=SecretStr(KEY),
        max_gas_price_wei=7,
    )
    assert cluster.chain() == ChainSettings(RPC, CONTROLLER, SecretStr(KEY), 7)
    node = NodeSettings(eth_rpc_url=RPC, eth_controller=CONTROLLER)
    assert node.chain() == ChainSettings(RPC, CONTROLLER)
    # The gateway reads the chain; its sender key signs tickets, not transactions.
    gateway = GatewaySettings(eth_rpc_url=RPC, eth_controller="0x1234", eth_recipient=CONTROLLER)
    assert gateway.chain() == ChainSettings(RPC, "0x1234")
    with pytest.raises(ConfigError, match="is not an address"):
        chain_client(gateway.chain(), signing=False)
    exporter = ExporterSettings(
        eth_rpc_url=RPC,
        eth_controller=CONTROLLER,
        exporter_orchestrator=CONTROLLER,
        exporter_timeout_s=2,
    )
    assert exporter.chain() == ChainSettings(RPC, CONTROLLER, rpc_timeout_s=2)
