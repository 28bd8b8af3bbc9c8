"""The contracts on a real anvil: bootstrap, ticket redemption (single and batch), reward.

anvil comes from the npm package pinned in chain/contracts (installed on first use). Locally
the tests skip when Node.js/npm or anvil cannot be installed; with ``CI=true`` they fail.
One chain is bootstrapped per module; every test runs from an evm_snapshot of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import TxReceipt

from chain.abi import ticket_tuple
from chain.devchain import (
    ANVIL_KEYS,
    Anvil,
    DevChain,
    bootstrap,
    contracts,
    mine,
    mine_to_next_round,
    revert,
    snapshot,
)
from chain.signing import Signer, keccak256
from chain.tickets import MAX_WIN_PROB, Ticket, address, recipient_rand_hash

pytestmark = pytest.mark.timeout(120)

FACE_VALUE = 10**15


@dataclass
class Env:
    """The bootstrapped chain, its contracts and the broadcaster's signer."""

    w3: Web3
    chain: DevChain
    c: dict[str, Contract]
    signer: Signer
    json_path: Path

    @property
    def broker(self) -> Contract:
        return self.c["TicketBroker"]

    @property
    def bonding(self) -> Contract:
        return self.c["BondingManager"]

    @property
    def rounds(self) -> Contract:
        return self.c["RoundsManager"]

    @property
    def orch(self) -> str:
        return self.chain.orchestrator.address

    def ticket(
        self, nonce: int, *, face_value: int = FACE_VALUE, win_prob: int = MAX_WIN_PROB
    ) -> tuple[Ticket, bytes, int]:
        """A ticket of the current round from the broadcaster to the orchestrator, signed."""
        current: int = self.rounds.functions.currentRound().call()
        block_hash: bytes = self.rounds.functions.blockHashForRound(current).call()
        rand = int.from_bytes(keccak256(b"rand" + nonce.to_bytes(8, "big")), "big")
        ticket = Ticket(
            recipient=address(self.orch),
            sender=self.signer.address,
            face_value=face_value,
            win_prob=win_prob,
            sender_nonce=nonce,
            recipient_rand_hash=recipient_rand_hash(rand),
            creation_round=current,
            creation_round_block_hash=block_hash,
        )
        return ticket, self.signer.sign_hash(ticket.hash()), rand

    def redeem(self, ticket: Ticket, sig: bytes, rand: int) -> TxReceipt:
        fn = self.broker.functions.redeemWinningTicket(ticket_tuple(ticket), sig, rand)
        return self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": self.orch}))

    def fees(self) -> int:
        value: int = self.bonding.functions.pendingFees(self.orch, 0).call()
        return value

    def used(self, ticket: Ticket) -> bool:
        value: bool = self.broker.functions.usedTickets(ticket.hash()).call()
        return value

    def revert_reason(self, ticket: Ticket, sig: bytes, rand: int) -> str:
        fn = self.broker.functions.redeemWinningTicket(ticket_tuple(ticket), sig, rand)
        with pytest.raises(ContractLogicError) as info:
            fn.call({"from": self.orch})
        return str(info.value)


@pytest.fixture(scope="module")
def base(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Env:
    w3 = anvil.web3()
    json_path = tmp_path_factory.mktemp("devchain") / "devchain.json"
    chain = bootstrap(w3, json_path)
    signer = Signer(bytes.fromhex(chain.broadcaster.private_key.removeprefix("0x")))
    return Env(w3, chain, contracts(w3, chain.contracts), signer, json_path)


@pytest.fixture
def env(base: Env) -> Iterator[Env]:
    """The bootstrapped chain, rolled back after the test."""
    snap = snapshot(base.w3)
    yield base
    revert(base.w3, snap)


def test_bootstrap_state(env: Env) -> None:
    chain = env.chain
    assert DevChain.read(env.json_path) == chain
    assert list(env.w3.eth.accounts[:3]) == [
        chain.deployer.address,
        chain.orchestrator.address,
        chain.broadcaster.address,
    ]
    assert chain.deployer.private_key == ANVIL_KEYS[0]
    controller = env.c["Controller"]
    assert controller.functions.paused().call() is False
    names = ("TicketBroker", "BondingManager", "RoundsManager", "Minter", "LivepeerToken")
    for name in (*names, "ServiceRegistry"):
        assert (
            controller.functions.getContract(Web3.keccak(text=name)).call()
            == (chain.contracts[name])
        )
    assert (
        controller.functions.getContract(Web3.keccak(text="JobsManager")).call()
        == (chain.contracts["TicketBroker"])
    )
    assert env.rounds.functions.currentRoundInitialized().call() is True
    assert env.rounds.functions.currentRound().call() == chain.round
    assert env.bonding.functions.isRegisteredTranscoder(env.orch).call() is True
    assert env.bonding.functions.isActiveTranscoder(env.orch).call() is True
    t = env.bonding.functions.getTranscoder(env.orch).call()
    assert (t[1], t[2]) == (chain.params.reward_cut, chain.params.fee_share)
    assert t[4] == chain.round  # activationRound
    assert env.bonding.functions.transcoderTotalStake(env.orch).call() == chain.params.stake
    assert env.bonding.functions.getTotalBonded().call() == chain.params.stake
    sender, reserve = env.broker.functions.getSenderInfo(chain.broadcaster.address).call()
    assert sender == (chain.params.deposit, 0)
    assert reserve == (chain.params.reserve, 0)
    assert env.w3.eth.get_balance(Web3.to_checksum_address(chain.contracts["Minter"])) == (
        chain.params.deposit + chain.params.reserve
    )


def test_ticket_hash_matches_python(env: Env) -> None:
    ticket, _, _ = env.ticket(1)
    assert env.broker.functions.getTicketHash(ticket_tuple(ticket)).call() == ticket.hash()
    bare = Ticket(address(env.orch), env.signer.address, 1, 500, 2**32 - 1, bytes(32))
    assert bare.aux_data == b""
    assert env.broker.functions.getTicketHash(ticket_tuple(bare)).call() == bare.hash()


def test_redeem_winning_ticket(env: Env) -> None:
    ticket, sig, rand = env.ticket(1)
    assert ticket.is_winning(sig, rand)
    before = env.fees()
    receipt = env.redeem(ticket, sig, rand)
    assert receipt["status"] == 1
    assert env.fees() - before == FACE_VALUE
    assert env.used(ticket)
    sender, _ = env.broker.functions.getSenderInfo(env.chain.broadcaster.address).call()
    assert sender[0] == env.chain.params.deposit - FACE_VALUE
    redeemed = env.broker.events.WinningTicketRedeemed().process_receipt(receipt, errors=DISCARD)
    assert len(redeemed) == 1
    assert redeemed[0]["args"]["recipientRand"] == rand
    assert redeemed[0]["args"]["auxData"] == ticket.aux_data
    transfer = env.broker.events.WinningTicketTransfer().process_receipt(receipt, errors=DISCARD)
    assert transfer[0]["args"]["amount"] == FACE_VALUE
    # Replay: the same ticket is refused with the reference's string, and stays paid once.
    assert "ticket is used" in env.revert_reason(ticket, sig, rand)
    with pytest.raises(ContractLogicError, match="ticket is used"):
        env.redeem(ticket, sig, rand)
    assert env.fees() - before == FACE_VALUE


def test_withdraw_fees(env: Env) -> None:
    ticket, sig, rand = env.ticket(7)
    env.redeem(ticket, sig, rand)
    payee = Web3.to_checksum_address(env.chain.deployer.address)
    balance = env.w3.eth.get_balance(payee)
    fn = env.bonding.functions.withdrawFees(payee, FACE_VALUE)
    env.w3.eth.wait_for_transaction_receipt(fn.transact({"from": env.orch}))
    assert env.w3.eth.get_balance(payee) - balance == FACE_VALUE
    assert env.fees() == 0


def test_revert_order_and_strings(env: Env) -> None:
    ticket, sig, rand = env.ticket(2)
    assert "recipientRand does not match recipientRandHash" in env.revert_reason(
        ticket, sig, rand + 1
    )
    other = Signer(bytes.fromhex(ANVIL_KEYS[3].removeprefix("0x")))
    assert "invalid signature over ticket hash" in env.revert_reason(
        ticket, other.sign_hash(ticket.hash()), rand
    )
    losing, losing_sig, losing_rand = env.ticket(3, win_prob=0)
    assert "ticket did not win" in env.revert_reason(losing, losing_sig, losing_rand)
    big, big_sig, big_rand = env.ticket(4, face_value=10**19)
    assert "sender deposit and reserve insufficient to cover ticket face value" in (
        env.revert_reason(big, big_sig, big_rand)
    )
    assert not env.used(big)
    # Two rounds later the ticket has expired (ticketValidityPeriod = 2).
    for _ in range(2):
        mine_to_next_round(env.w3, env.rounds)
        fn = env.rounds.functions.initializeRound()
        env.w3.eth.wait_for_transaction_receipt(
            fn.transact({"from": env.chain.deployer.address, "gas": 1_000_000})
        )
    assert "ticket is expired" in env.revert_reason(ticket, sig, rand)


def test_reserve_pays_what_the_deposit_cannot(env: Env) -> None:
    deposit = env.chain.params.deposit
    face_value = deposit + 10**17
    ticket, sig, rand = env.ticket(5, face_value=face_value)
    before = env.fees()
    receipt = env.redeem(ticket, sig, rand)
    claimed = env.broker.events.ReserveClaimed().process_receipt(receipt, errors=DISCARD)
    assert [e["args"]["amount"] for e in claimed] == [10**17]
    assert env.fees() - before == face_value
    sender, reserve = env.broker.functions.getSenderInfo(env.chain.broadcaster.address).call()
    assert sender[0] == 0
    assert reserve == (env.chain.params.reserve - 10**17, 10**17)
    broadcaster = env.chain.broadcaster.address
    assert env.broker.functions.claimedReserve(broadcaster, env.orch).call() == 10**17


def test_batch_of_five_in_one_transaction(env: Env) -> None:
    batch = [env.ticket(10 + i) for i in range(5)]
    before = env.fees()
    fn = env.broker.functions.batchRedeemWinningTickets(
        [ticket_tuple(t) for t, _, _ in batch],
        [sig for _, sig, _ in batch],
        [rand for _, _, rand in batch],
    )
    receipt = env.w3.eth.wait_for_transaction_receipt(
        fn.transact({"from": env.orch, "gas": 2_000_000})
    )
    assert receipt["status"] == 1
    assert all(env.used(t) for t, _, _ in batch)
    assert env.fees() - before == 5 * FACE_VALUE
    redeemed = env.broker.events.WinningTicketRedeemed().process_receipt(receipt, errors=DISCARD)
    assert len(redeemed) == 5


def test_batch_skips_a_bad_ticket(env: Env) -> None:
    batch = [env.ticket(20 + i) for i in range(5)]
    bad_ticket, bad_sig, bad_rand = batch[2]
    batch[2] = (bad_ticket, bad_sig, bad_rand + 1)  # wrong rand: reverts inside the batch
    before = env.fees()
    fn = env.broker.functions.batchRedeemWinningTickets(
        [ticket_tuple(t) for t, _, _ in batch],
        [sig for _, sig, _ in batch],
        [rand for _, _, rand in batch],
    )
    receipt = env.w3.eth.wait_for_transaction_receipt(
        fn.transact({"from": env.orch, "gas": 2_000_000})
    )
    assert receipt["status"] == 1
    assert [env.used(t) for t, _, _ in batch] == [True, True, False, True, True]
    assert env.fees() - before == 4 * FACE_VALUE
    # The skipped ticket is still redeemable on its own with the right rand.
    env.redeem(bad_ticket, bad_sig, bad_rand)
    assert env.used(bad_ticket)


def test_reward_once_per_round(env: Env) -> None:
    orch, deployer = env.orch, env.chain.deployer.address
    stake = env.bonding.functions.transcoderTotalStake(orch).call()
    receipt = env.w3.eth.wait_for_transaction_receipt(
        env.bonding.functions.reward().transact({"from": orch})
    )
    minted = env.bonding.events.Reward().process_receipt(receipt, errors=DISCARD)[0]["args"][
        "amount"
    ]
    assert minted > 0
    assert env.bonding.functions.transcoderTotalStake(orch).call() == stake + minted
    assert env.bonding.functions.getTranscoder(orch).call()[0] == env.chain.round
    with pytest.raises(ContractLogicError, match="already called reward for the current round"):
        env.bonding.functions.reward().call({"from": orch})

    mine_to_next_round(env.w3, env.rounds)
    mine(env.w3, 1)  # eth_call runs in the latest block: make that one the new round's
    with pytest.raises(ContractLogicError, match="current round is not initialized"):
        env.bonding.functions.reward().call({"from": orch})
    init = env.rounds.functions.initializeRound()
    env.w3.eth.wait_for_transaction_receipt(init.transact({"from": deployer, "gas": 1_000_000}))
    receipt = env.w3.eth.wait_for_transaction_receipt(
        env.bonding.functions.reward().transact({"from": orch})
    )
    assert receipt["status"] == 1
    assert env.bonding.functions.getTranscoder(orch).call()[0] == env.chain.round + 1
    # The orchestrator's own stake grew by everything minted (it is its only delegator).
    pending = env.bonding.functions.pendingStake(orch, 0).call()
    assert stake + minted < pending <= env.bonding.functions.transcoderTotalStake(orch).call()


def _next_round(env: Env) -> None:
    mine_to_next_round(env.w3, env.rounds)
    fn = env.rounds.functions.initializeRound()
    env.w3.eth.wait_for_transaction_receipt(
        fn.transact({"from": env.chain.deployer.address, "gas": 1_000_000})
    )


def test_unlock_then_withdraw(env: Env) -> None:
    sender = Web3.to_checksum_address(env.chain.broadcaster.address)
    receipt = env.w3.eth.wait_for_transaction_receipt(
        env.broker.functions.unlock().transact({"from": sender})
    )
    (unlock,) = env.broker.events.Unlock().process_receipt(receipt, errors=DISCARD)
    assert unlock["args"]["endRound"] == env.chain.round + 2
    assert env.broker.functions.isUnlockInProgress(sender).call() is True
    with pytest.raises(ContractLogicError, match="account is locked"):
        env.broker.functions.withdraw().call({"from": sender})
    _next_round(env)
    _next_round(env)
    ticket, sig, rand = env.ticket(30)
    assert "sender is unlocked" in env.revert_reason(ticket, sig, rand)
    balance = env.w3.eth.get_balance(sender)
    receipt = env.w3.eth.wait_for_transaction_receipt(
        env.broker.functions.withdraw().transact({"from": sender})
    )
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    (withdrawal,) = env.broker.events.Withdrawal().process_receipt(receipt, errors=DISCARD)
    params = env.chain.params
    assert (withdrawal["args"]["deposit"], withdrawal["args"]["reserve"]) == (
        params.deposit,
        params.reserve,
    )
    assert env.w3.eth.get_balance(sender) - balance + gas_cost == params.deposit + params.reserve
    assert [tuple(part) for part in env.broker.functions.getSenderInfo(sender).call()] == [
        (0, 0),
        (0, 0),
    ]


def test_unbond_rebond_and_withdraw_stake(env: Env) -> None:
    orch, amount = env.orch, 100 * 10**18
    stake = env.bonding.functions.transcoderTotalStake(orch).call()
    env.w3.eth.wait_for_transaction_receipt(
        env.bonding.functions.unbond(amount).transact({"from": orch})
    )
    assert env.bonding.functions.transcoderTotalStake(orch).call() == stake - amount
    lock = env.bonding.functions.getDelegatorUnbondingLock(orch, 0).call()
    assert tuple(lock) == (amount, env.chain.round + 7)
    with pytest.raises(ContractLogicError, match="withdraw round must be before or equal"):
        env.bonding.functions.withdrawStake(0).call({"from": orch})
    env.w3.eth.wait_for_transaction_receipt(
        env.bonding.functions.rebond(0).transact({"from": orch})
    )
    assert env.bonding.functions.transcoderTotalStake(orch).call() == stake
    env.w3.eth.wait_for_transaction_receipt(
        env.bonding.functions.unbond(amount).transact({"from": orch})
    )
    for _ in range(7):
        _next_round(env)
    token = env.c["LivepeerToken"]
    before = token.functions.balanceOf(orch).call()
    env.w3.eth.wait_for_transaction_receipt(
        env.bonding.functions.withdrawStake(1).transact({"from": orch})
    )
    assert token.functions.balanceOf(orch).call() - before == amount
