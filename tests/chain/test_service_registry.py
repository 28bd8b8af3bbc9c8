"""The ServiceRegistry on anvil: the orchestrator's advertised URI, set and read back.

Also the URI check that runs before anything is sent, and what ``farm chain dev`` advertises.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from chain.client import ChainClient, ContractReverted, NoSigningKey
from chain.devchain import main as devchain_main
from chain.service_uri import DEFAULT_DEV_SERVICE_URI, InvalidServiceURI, parse
from chain.signing import keccak256
from chain.staking import InvalidArgument, Staking
from tests.chain.test_client import Env, base, env  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)

URI_UPDATE_TOPIC = "fbb63068732c85741c9f8e61caffaabe038d577bfafd2d2dcc0e352a4f653a4c"

GOOD = [
    "https://orch.example.com:8935",
    "https://127.0.0.1:8935",
    "https://[2001:db8::1]:443",
    "https://Orch-1.Example.COM:1",
    "https://orch.example.com.:65535",
]
BAD = {
    "": "empty",
    "orch.example.com:8935": "https",
    "http://orch.example.com:8935": "not http://",
    "https://orch.example.com": "no port",
    "https://orch.example.com:0": "no port",
    "https://orch.example.com:99999": "not a URL",
    "https://orch.example.com:port": "not a URL",
    "https://:8935": "no host",
    "https://orch.example.com:8935/": "no path",
    "https://orch.example.com:8935/segment": "no path",
    "https://orch.example.com:8935?x=1": "no path, query",
    "https://orch.example.com:8935?": "no path, query",
    "https://orch.example.com:8935#top": "fragment",
    "https://user:pw@orch.example.com:8935": "no user or password",
    "https://orch_example.com:8935": "not a host name",
    "https://-orch.example.com:8935": "not a host name",
    "https://1.2.3:8935": "not a host name",
    "https://256.1.1.1:8935": "not a host name",
    "https://0.0.0.0:8935": "no address a gateway can reach",
    "https://[::]:8935": "no address a gateway can reach",
    "https://orch.example.com :8935": "spaces",
    " https://orch.example.com:8935": "spaces",
    "https://orch.example.com:8935\n": "control characters",
    "https://" + "a" * 300 + ".com:8935": "over 300 characters",
}


@pytest.mark.parametrize("uri", GOOD)
def test_parse_accepts_https_host_and_port(uri: str) -> None:
    assert parse(uri) == uri


@pytest.mark.parametrize(("uri", "says"), sorted(BAD.items()))
def test_parse_refuses_anything_else_in_one_line(uri: str, says: str) -> None:
    with pytest.raises(InvalidServiceURI) as info:
        parse(uri)
    message = str(info.value)
    assert says in message and "\n" not in message


def test_devchain_advertises_the_orchestrator(env: Env) -> None:  # noqa: F811
    chain = env.chain
    controller = env.c["Controller"]
    registry = chain.contracts["ServiceRegistry"]
    assert controller.functions.getContract(Web3.keccak(text="ServiceRegistry")).call() == (
        registry
    )
    assert env.client.service_registry.address == registry
    assert chain.params.service_uri == DEFAULT_DEV_SERVICE_URI
    assert env.client.service_uri(env.orch) == DEFAULT_DEV_SERVICE_URI
    assert env.client.service_uri(env.sender) == ""  # never set one


def test_set_then_get_with_the_event(env: Env) -> None:  # noqa: F811
    client = env.client
    receipt = client.set_service_uri("https://orch.example.com:8936")
    assert client.service_uri(env.orch) == "https://orch.example.com:8936"
    assert client.service_uri(env.chain.orchestrator.address) == "https://orch.example.com:8936"
    assert client.service_uri(env.sender) == ""  # one URI per account
    (log,) = receipt["logs"]
    assert log["address"] == env.chain.contracts["ServiceRegistry"]
    assert bytes(log["topics"][0]).hex() == URI_UPDATE_TOPIC
    assert keccak256(b"ServiceURIUpdate(address,string)").hex() == URI_UPDATE_TOPIC
    assert bytes(log["topics"][1]) == bytes(12) + env.orch  # addr is indexed
    (event,) = client.service_registry.events.ServiceURIUpdate().process_receipt(receipt)
    assert event["args"]["addr"] == env.chain.orchestrator.address
    assert event["args"]["serviceURI"] == "https://orch.example.com:8936"
    # A second call replaces the first.
    client.set_service_uri("https://10.0.0.7:8935")
    assert client.service_uri(env.orch) == "https://10.0.0.7:8935"


def test_a_bad_uri_sends_nothing(env: Env) -> None:  # noqa: F811
    nonce = env.tx_count()
    for uri in BAD:
        with pytest.raises(InvalidServiceURI):
            env.client.set_service_uri(uri)
        with pytest.raises(InvalidArgument):
            Staking(env.client).set_service_uri(uri)
    assert env.tx_count() == nonce
    assert env.client.service_uri(env.orch) == DEFAULT_DEV_SERVICE_URI


def test_a_refused_call_is_simulated_not_sent(env: Env) -> None:  # noqa: F811
    controller = env.c["Controller"]
    tx = controller.functions.pause().transact({"from": env.chain.deployer.address})
    env.w3.eth.wait_for_transaction_receipt(tx)
    nonce = env.tx_count()
    with pytest.raises(ContractReverted) as info:
        env.client.set_service_uri("https://orch.example.com:8936")
    assert info.value.reason == "system is paused" and "nothing sent" in str(info.value)
    assert env.tx_count() == nonce


def test_read_only_client_reads_but_cannot_set(env: Env) -> None:  # noqa: F811
    reader = ChainClient(env.chain.rpc_url, env.chain.contracts["Controller"])
    assert reader.service_uri(env.orch) == DEFAULT_DEV_SERVICE_URI
    nonce = env.tx_count()
    with pytest.raises(NoSigningKey):
        reader.set_service_uri("https://orch.example.com:8936")
    assert env.tx_count() == nonce


@pytest.fixture
def no_registry(env: Env) -> Iterator[Env]:  # noqa: F811
    """The chain with ServiceRegistry unregistered from the Controller (rolled back)."""
    controller = env.c["Controller"]
    fn = controller.functions.setContractInfo(
        Web3.keccak(text="ServiceRegistry"), "0x" + "00" * 20, bytes(20)
    )
    env.w3.eth.wait_for_transaction_receipt(fn.transact({"from": env.chain.deployer.address}))
    yield env


def test_status_without_a_registry(no_registry: Env) -> None:
    # A chain without ServiceRegistry: None, and the rest of the status still answers.
    without = Staking(ChainClient.from_devchain(no_registry.json_path)).status()
    assert without["service_uri"] is None and without["active"] is True


def test_status_shows_the_advertised_uri(env: Env) -> None:  # noqa: F811
    staking = Staking(env.client)
    assert staking.status()["service_uri"] == DEFAULT_DEV_SERVICE_URI
    result = staking.set_service_uri("https://orch.example.com:8936")
    assert result.op == "setServiceURI" and result.gas_used > 0
    assert staking.status()["service_uri"] == "https://orch.example.com:8936"


def test_devchain_refuses_a_bad_service_uri_before_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert devchain_main(["unused.json", "--service-uri", "http://x:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--service-uri:") and err.count("\n") == 1
