"""ChainClient against the development contracts on a real anvil.

The fixtures here (one bootstrapped anvil per module, a snapshot per test, a fresh client per
test) are imported by test_redeem.py and test_reward.py. Locally the tests skip when anvil
cannot be installed; with ``CI=true`` they fail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from chain.client import (
    ChainClient,
    ChainUnavailable,
    ContractReverted,
    GasPriceTooHigh,
    NoSigningKey,
    TransactionFailed,
)
from chain.devchain import (
    Anvil,
    DevChain,
    bootstrap,
    contracts,
    mine,
    mine_to_next_round,
    revert,
    snapshot,
)
from chain.errors import ChainError
from chain.params import RecipientConfig, TicketParamsIssuer, creation_round
from chain.signing import Signer
from chain.staking import Staking
from chain.tickets import MAX_WIN_PROB, Ticket, address, recipient_rand_hash
from chain.validation import ChainView

pytestmark = pytest.mark.timeout(120)

FACE_VALUE = 10**15
PRICE = Fraction(1)


@dataclass
class Env:
    """The bootstrapped chain, a client signing as the orchestrator, the broadcaster."""

    w3: Web3
    chain: DevChain
    c: dict[str, Contract]
    json_path: Path
    client: ChainClient
    signer: Signer
    issuer: TicketParamsIssuer

    @property
    def orch(self) -> bytes:
        return address(self.chain.orchestrator.address)

    @property
    def sender(self) -> bytes:
        return address(self.chain.broadcaster.address)

    def tx_count(self, role: str = "orchestrator") -> int:
        """Transactions sent so far by a devchain account."""
        account = getattr(self.chain, role).address
        return self.w3.eth.get_transaction_count(Web3.to_checksum_address(account))

    def initialize_round(self) -> None:
        """initializeRound from the deployer when the current round is not initialized."""
        rounds = self.c["RoundsManager"]
        if not rounds.functions.currentRoundInitialized().call():
            fn = rounds.functions.initializeRound()
            tx = fn.transact({"from": self.chain.deployer.address, "gas": 1_000_000})
            self.w3.eth.wait_for_transaction_receipt(tx)

    def next_round(self) -> None:
        """Mine into the next round and initialize it."""
        mine_to_next_round(self.w3, self.c["RoundsManager"])
        mine(self.w3, 1)
        self.initialize_round()

    def mine_past(self, block: int) -> None:
        """Mine until the latest block is past ``block``; initialize a round crossed into."""
        mine(self.w3, block + 1 - self.w3.eth.block_number)
        self.initialize_round()

    def winning(
        self, count: int, *, face_value: int | None = None, first_nonce: int = 1
    ) -> list[tuple[Ticket, bytes, int, int]]:
        """``count`` winning tickets (ticket, sig, rand, expiration block) from fresh params.

        With ``face_value`` the tickets carry that value instead of the params' (the rand and
        signature stay valid: the contract does not see the params).
        """
        client = self.client
        round_, block_hash = creation_round(
            client.last_initialized_round(), client.block_hash_for_round
        )
        params = self.issuer.ticket_params(
            self.sender,
            PRICE,
            gas_price=client.gas_price(),
            max_float=client.max_float(self.sender, self.orch),
            last_seen_l1_block=client.last_seen_l1_block(),
            creation_round=round_,
            creation_round_block_hash=block_hash,
        )
        assert params.win_prob == MAX_WIN_PROB
        out = []
        for nonce in range(first_nonce, first_nonce + count):
            ticket = params.ticket(self.sender, nonce)
            value = face_value if face_value is not None else ticket.face_value
            rand = self.issuer.recipient_rand(
                params.seed,
                self.sender,
                params.face_value,
                params.win_prob,
                params.expiration_block,
                PRICE,
                ticket.aux_data,
            )
            assert recipient_rand_hash(rand) == ticket.recipient_rand_hash
            if value != ticket.face_value:
                ticket = Ticket(
                    ticket.recipient,
                    ticket.sender,
                    value,
                    ticket.win_prob,
                    nonce,
                    ticket.recipient_rand_hash,
                    ticket.creation_round,
                    ticket.creation_round_block_hash,
                )
            sig = self.signer.sign_hash(ticket.hash())
            assert ticket.is_winning(sig, rand)
            out.append((ticket, sig, rand, params.expiration_block))
        return out


@pytest.fixture(scope="module")
def base(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Env:
    w3 = anvil.web3()
    json_path = tmp_path_factory.mktemp("devchain") / "devchain.json"
    chain = bootstrap(w3, json_path)
    signer = Signer(bytes.fromhex(chain.broadcaster.private_key.removeprefix("0x")))
    # EV = faceValue makes winProb 2^256 - 1: every ticket wins.
    config = RecipientConfig(ev=FACE_VALUE, redeem_gas=200_000, max_face_value=FACE_VALUE)
    issuer = TicketParamsIssuer(address(chain.orchestrator.address), config, bytes(range(32)))
    client = ChainClient.from_devchain(chain)
    return Env(w3, chain, contracts(w3, chain.contracts), json_path, client, signer, issuer)


@pytest.fixture
def env(base: Env) -> Iterator[Env]:
    """The bootstrapped chain with a fresh client, rolled back after the test."""
    snap = snapshot(base.w3)
    base.client = ChainClient.from_devchain(base.json_path)
    yield base
    revert(base.w3, snap)


# ---- tests ------------------------------------------------------------------------------


def test_reads_match_contract_state(env: Env) -> None:
    client, chain = env.client, env.chain
    view: ChainView = client
    rounds, broker = env.c["RoundsManager"], env.c["TicketBroker"]
    assert client.contract("TicketBroker").address == chain.contracts["TicketBroker"]
    assert client.bonding.address == chain.contracts["BondingManager"]
    assert client.rounds.address == chain.contracts["RoundsManager"]
    assert client.address == env.orch
    assert view.last_initialized_round() == chain.round == client.current_round()
    assert client.current_round_initialized()
    assert view.last_seen_l1_block() == env.w3.eth.block_number
    assert client.block_hash_for_round(chain.round) == bytes(
        rounds.functions.blockHashForRound(chain.round).call()
    )
    assert client.block_hash_for_round(chain.round + 5) == bytes(32)
    assert client.round_length() == chain.round_length
    assert client.ticket_validity_period() == 2
    info = client.sender_info(env.sender)
    assert (info.deposit, info.reserve, info.withdraw_round) == (
        chain.params.deposit,
        chain.params.reserve,
        0,
    )
    assert view.withdraw_round(env.sender) == 0
    # One transcoder in the pool: it may draw the whole reserve.
    assert client.claimable_reserve(env.sender, env.orch) == chain.params.reserve
    assert client.max_float(env.sender, env.orch) == chain.params.deposit + chain.params.reserve
    assert client.max_float(env.sender, env.orch, pending=10**18) == chain.params.reserve
    # Not a transcoder: no reserve allocation.
    deployer = address(chain.deployer.address)
    assert client.max_float(env.sender, deployer) == chain.params.deposit
    assert client.gas_price() == env.w3.eth.gas_price
    assert client.fees(env.orch) == 0
    assert client.used(bytes(32)) is False
    t = client.transcoder_info(env.orch)
    assert (t.reward_cut, t.fee_share, t.activation_round) == (
        chain.params.reward_cut,
        chain.params.fee_share,
        chain.round,
    )
    assert client.is_active_transcoder(env.orch)
    assert not client.is_active_transcoder(deployer)

    # Unlocking moves withdraw_round; fees and usedTickets follow a redemption.
    sender_client = ChainClient.from_devchain(env.json_path, role="broadcaster")
    sender_client.transact(sender_client.broker.functions.unlock())
    assert view.withdraw_round(env.sender) == chain.round + 2
    sender_client.transact(sender_client.broker.functions.cancelUnlock())
    ((ticket, sig, rand, _),) = env.winning(1)
    fn = client.broker.functions.redeemWinningTicket(
        (
            Web3.to_checksum_address(ticket.recipient),
            Web3.to_checksum_address(ticket.sender),
            *ticket.as_abi_tuple()[2:],
        ),
        sig,
        rand,
    )
    assert client.revert_reason(fn) is None
    client.transact(fn)
    assert client.used(ticket.hash())
    assert client.fees(env.orch) == ticket.face_value
    assert client.sender_info(env.sender).deposit == chain.params.deposit - ticket.face_value
    assert client.revert_reason(fn) == "ticket is used"
    assert broker.functions.usedTickets(ticket.hash()).call() is True


def test_from_devchain_accepts_json_and_dict(env: Env) -> None:
    for info in (env.json_path, str(env.json_path), env.chain.to_json(), env.chain):
        client = ChainClient.from_devchain(info)
        assert client.current_round() == env.chain.round
        assert client.address == env.orch
    assert ChainClient.from_devchain(env.chain, role="broadcaster").address == env.sender
    assert "private" not in repr(env.client) and env.chain.orchestrator.private_key[2:] not in (
        repr(env.client)
    )


def test_transaction_fees_are_capped(env: Env) -> None:
    client = env.client
    block = env.w3.eth.get_block("latest")
    base_fee = int(block["baseFeePerGas"])
    max_fee, tip = client.fee_caps()
    assert max_fee == 2 * base_fee + tip
    capped = ChainClient.from_devchain(
        env.json_path, role="broadcaster", max_gas_price_wei=base_fee + 10
    )
    max_fee, tip = capped.fee_caps()
    assert max_fee == base_fee + 10 and tip <= 10
    receipt = capped.transact(capped.broker.functions.unlock(), gas=200_000)
    tx = env.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["type"] == 2 and tx["maxFeePerGas"] == base_fee + 10 and tx["gas"] == 200_000
    too_low = ChainClient.from_devchain(env.json_path, max_gas_price_wei=1)
    nonce = env.tx_count()
    with pytest.raises(GasPriceTooHigh):
        too_low.transact(too_low.bonding.functions.reward())
    assert env.tx_count() == nonce


def test_transaction_errors(env: Env) -> None:
    client = env.client
    client.transact(client.bonding.functions.reward(), gas=1_000_000)
    # An estimate that reverts names the reason and sends nothing.
    with pytest.raises(ContractReverted) as info:
        client.transact(client.bonding.functions.reward())
    assert "already called reward" in info.value.reason
    # With an explicit gas limit the transaction is mined and fails: status 0 is an error.
    with pytest.raises(TransactionFailed) as failed:
        client.transact(client.bonding.functions.reward(), gas=1_000_000)
    assert failed.value.receipt["status"] == 0
    assert str(failed.value).startswith("transaction failed txHash=0x")
    read_only = ChainClient(env.chain.rpc_url, env.chain.contracts["Controller"])
    assert read_only.address is None
    with pytest.raises(NoSigningKey):
        read_only.transact(read_only.bonding.functions.reward())


def test_concurrent_transactions_get_distinct_nonces(env: Env) -> None:
    client = ChainClient.from_devchain(env.json_path, role="broadcaster")
    errors: list[BaseException] = []
    start = env.tx_count("broadcaster")

    def fund() -> None:
        try:
            client.transact(client.broker.functions.fundDeposit(), value=1, gas=100_000)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=fund) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert env.tx_count("broadcaster") == start + 6
    assert client.sender_info(env.sender).deposit == env.chain.params.deposit + 6


def test_stuck_transaction_is_replaced_with_higher_fees(env: Env) -> None:
    client = ChainClient.from_devchain(env.json_path, role="broadcaster")
    client.replace_after_s = 0.5
    me = env.chain.broadcaster.address
    deposit = client.sender_info(env.sender).deposit
    nonce = env.tx_count("broadcaster")
    result: dict[str, Any] = {}

    def fund() -> None:
        try:
            result["receipt"] = client.transact(
                client.broker.functions.fundDeposit(), value=7, gas=100_000
            )
        except BaseException as e:  # pragma: no cover - reported below
            result["error"] = e

    def pending() -> Any:
        content = env.w3.provider.make_request("txpool_content", [])["result"]
        by_sender = {k.lower(): v for k, v in content["pending"].items()}
        return by_sender.get(me.lower(), {}).get(str(nonce))

    env.w3.provider.make_request("evm_setAutomine", [False])
    try:
        thread = threading.Thread(target=fund)
        thread.start()
        first = wait_until(pending)
        # Nothing is mined: after replace_after_s the client sends the same nonce again
        # with fees at least 12.5 % higher, and the pool holds the replacement instead.
        replaced = wait_until(lambda: (p := pending()) and p["hash"] != first["hash"] and p)
        assert int(replaced["maxFeePerGas"], 16) * 8 >= int(first["maxFeePerGas"], 16) * 9
        assert int(replaced["nonce"], 16) == nonce
        env.w3.provider.make_request("evm_mine", [])
        thread.join(timeout=30)
    finally:
        env.w3.provider.make_request("evm_setAutomine", [True])
    assert "error" not in result, result
    receipt = result["receipt"]
    assert "0x" + bytes(receipt["transactionHash"]).hex() != first["hash"]
    assert env.tx_count("broadcaster") == nonce + 1
    assert client.sender_info(env.sender).deposit == deposit + 7  # paid once, not twice


def wait_until(probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    """What ``probe`` returns once it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := probe():
            return got
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_unreachable_node_raises_chain_unavailable(env: Env) -> None:
    dead = ChainClient("http://127.0.0.1:9", env.chain.contracts["Controller"], rpc_timeout_s=1.0)
    with pytest.raises(ChainUnavailable):
        dead.current_round()
    with pytest.raises(ChainUnavailable):
        dead.last_seen_l1_block()
    # Contracts resolved before the node went away still fail the same way.
    client = ChainClient.from_devchain(env.json_path)
    assert client.current_round() == env.chain.round
    client.w3.provider = Web3.HTTPProvider("http://127.0.0.1:9", exception_retry_configuration=None)
    with pytest.raises(ChainUnavailable):
        client.used(bytes(32))
    with pytest.raises(ChainUnavailable):
        client.transact(client.bonding.functions.reward(), gas=1_000_000)


def test_round_helpers(env: Env) -> None:
    before = env.client.current_round()
    env.next_round()
    assert env.client.current_round() == before + 1
    assert env.client.last_initialized_round() == before + 1
    assert MAX_WIN_PROB == 2**256 - 1


def test_initialize_round_on_the_last_block_of_a_round(env: Env) -> None:
    # The latest block is the last of an initialized round: initializeRound is refused there,
    # but the transaction is mined in the next block, the first of a round not yet initialized.
    env.next_round()
    before = env.client.current_round()
    mine_to_next_round(env.w3, env.c["RoundsManager"])
    assert env.client.current_round() == before and env.client.current_round_initialized()
    deployer = ChainClient.from_devchain(env.json_path, role="deployer")
    fn = deployer.rounds.functions.initializeRound()
    assert deployer.revert_reason(fn) is None  # as the next block will see it
    result = Staking(deployer).initialize_round()
    assert result.op == "initializeRound"
    assert env.client.last_initialized_round() == before + 1
    # And a call that the next block refuses is refused before anything is sent.
    nonce = env.tx_count("deployer")
    with pytest.raises(ContractReverted, match="round already initialized"):
        Staking(deployer).initialize_round()
    assert env.tx_count("deployer") == nonce


def test_a_read_of_an_address_without_code_is_a_chain_error(env: Env) -> None:
    """Reads skip web3's machinery (ChainClient.call): an answer that is not the function's
    return data is still a ChainError, never a wrong value."""
    client = ChainClient.from_devchain(env.json_path)
    nowhere = client.w3.eth.contract(
        address=Web3.to_checksum_address(b"\x07" * 20), abi=client.rounds.abi
    )
    with pytest.raises(ChainError, match="currentRound: undecodable answer"):
        client.call(nowhere.functions.currentRound())
    # The same function on the real contract, through the same path.
    assert client.call(client.rounds.functions.currentRound()) == env.chain.round
