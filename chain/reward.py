"""Calling reward once per round, whatever restarts happen in between.

go-livepeer calls reward only on a NewRound event, so a node that restarts (or fails once)
misses the round (#1741, #435, #2718). ``RewardService.run_once`` is meant to run every few
minutes instead, and reads everything it decides on from the chain:

- the current round must be initialized (reward before initializeRound reverts);
- the orchestrator must not have rewarded in it (``getTranscoder().lastRewardRound``);
- it must be in the active set.

Then it simulates ``reward()`` (a revert costs no gas and names its reason), sends it with an
explicit gas limit (the transaction may land across a round boundary, where an estimate made
in the old round is meaningless) and confirms ``lastRewardRound`` moved. A failure is
reported and retried by the next run within the round; a second run in the same round,
in this process or another, sees ``lastRewardRound`` and does nothing.
"""

from __future__ import annotations

from typing import Final

from eth_account import Account
from web3.logs import DISCARD

from chain.client import (
    ChainClient,
    ContractReverted,
    GasPriceTooHigh,
    TransactionFailed,
    TransactionRejected,
)

__all__ = ["REWARD_GAS", "RewardService"]

#: The explicit gas limit of reward(); it takes about 265k on the development contracts, and
#: more when the active pool must be re-sorted.
REWARD_GAS: Final = 1_000_000


class RewardService:
    """Claims an orchestrator's inflation reward once per round; stateless across restarts."""

    def __init__(
        self,
        client: ChainClient,
        orchestrator_key: bytes | str | None = None,
        *,
        gas_limit: int = REWARD_GAS,
        initialize_rounds: bool = False,
    ) -> None:
        """``orchestrator_key`` signs reward(); None signs with the client's own key.

        With ``initialize_rounds`` the service also calls ``initializeRound`` when nobody has
        yet (go-livepeer's ``-initializeRound``), instead of waiting for someone else.
        """
        if orchestrator_key is None:
            if client.address is None:
                raise ValueError("a key is needed: the client is read-only")
            self._key: bytes | None = None
            self.orchestrator = client.address
        else:
            key = (
                bytes.fromhex(orchestrator_key.removeprefix("0x"))
                if isinstance(orchestrator_key, str)
                else orchestrator_key
            )
            self._key = key
            self.orchestrator = bytes.fromhex(Account.from_key(key).address[2:])
        self.client = client
        self.gas_limit = gas_limit
        self.initialize_rounds = initialize_rounds

    def __repr__(self) -> str:  # never show the key
        return f"RewardService(0x{self.orchestrator.hex()})"

    def _initialize(self, current: int) -> str | None:
        """Initialize ``current``; None when it is initialized now, else what went wrong."""
        fn = self.client.rounds.functions.initializeRound()
        reason = self.client.revert_reason(fn, sender=self.orchestrator)
        if reason is None:
            try:
                self.client.transact(fn, gas=self.gas_limit, private_key=self._key)
            except GasPriceTooHigh as e:
                return f"skipped: {e}"
            except (TransactionFailed, TransactionRejected, ContractReverted) as e:
                reason = str(e)
        # Another initializer may have won the race: what counts is the state now.
        if self.client.current_round_initialized():
            return None
        return f"failed: initializeRound in round {current}: {reason}"

    def run_once(self) -> str:
        """Call reward if it is due; return what happened, starting with ``rewarded:``,
        ``skipped:`` (nothing to do) or ``failed:`` (the next run retries).

        Raises ChainUnavailable when the node cannot be reached.
        """
        client, me = self.client, self.orchestrator
        current = client.current_round()
        if not client.current_round_initialized():
            if not self.initialize_rounds:
                return f"skipped: round {current} is not initialized"
            failed = self._initialize(current)
            if failed is not None:
                return failed
        last = client.transcoder_info(me).last_reward_round
        if last >= current:
            return f"skipped: reward already called in round {current}"
        if not client.is_active_transcoder(me):
            return f"skipped: 0x{me.hex()} is not an active transcoder in round {current}"

        fn = client.bonding.functions.reward()
        reason = client.revert_reason(fn, sender=me)
        if reason is not None:
            return f"failed: reward in round {current} would revert: {reason}"
        try:
            receipt = client.transact(fn, gas=self.gas_limit, private_key=self._key)
        except GasPriceTooHigh as e:
            return f"skipped: {e}"
        except (TransactionFailed, TransactionRejected, ContractReverted) as e:
            return f"failed: reward in round {current}: {e}"

        rewarded = client.transcoder_info(me).last_reward_round
        if rewarded < current:
            return f"failed: reward in round {current} mined but lastRewardRound is {rewarded}"
        events = client.bonding.events.Reward().process_receipt(receipt, errors=DISCARD)
        minted = sum(int(e["args"]["amount"]) for e in events)
        tx = bytes(receipt["transactionHash"]).hex()
        return f"rewarded: round {rewarded}, {minted} LPT wei minted (tx 0x{tx})"
