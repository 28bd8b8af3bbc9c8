"""The one web3 client the rest of the code uses: contract reads and signed transactions.

``ChainClient`` resolves TicketBroker, BondingManager and RoundsManager through the
Controller (``getContract(keccak256(name))``), implements :class:`chain.broker.Broker` (what
the ticket validator and the redeemer need) and the reads the recipient and the reward service
need, and sends transactions signed locally with its key:

- nonces under a lock, the higher of the node's pending count and the last nonce used here;
- EIP-1559 fees: ``maxFeePerGas = min(max_gas_price, 2 x baseFee + priority)`` (go-livepeer
  caps at ``2 x baseFee``; a node needs ``gas x maxFeePerGas`` in the account, go-livepeer
  #2574), refused outright when the base fee alone exceeds the cap;
- an explicit gas limit where the caller gives one (a batch's own estimate is unsafe, its
  inner failures are swallowed: the redeemer sums its tickets' estimates), an estimate
  otherwise; simulations and estimates run on the pending block, the one a transaction sent
  now is mined in;
- the receipt's status checked: status 0 raises :class:`TransactionFailed`.

Every failure is a :class:`chain.errors.ChainError`; a node that cannot be reached (refused
connection, timeout, no receipt in time) raises :class:`ChainUnavailable`, which callers may
retry.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector
from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.logs import DISCARD
from web3.types import Nonce, RPCEndpoint, TxParams, TxReceipt, Wei

from chain.abi import abi, contract_id, redeemed_ticket, ticket_tuple
from chain.broker import RedeemTx, SenderInfo
from chain.errors import (
    ChainError,
    ChainUnavailable,
    ContractReverted,
    GasPriceTooHigh,
    TransactionRejected,
)
from chain.service_uri import parse as parse_service_uri
from chain.tickets import ZERO_ADDRESS, SignedTicket, Ticket

if TYPE_CHECKING:
    from chain.devchain import DevChain

__all__ = [
    "ChainClient",
    "ChainUnavailable",
    "ContractNotRegistered",
    "ContractReverted",
    "GasPriceTooHigh",
    "InvalidDevChain",
    "NoSigningKey",
    "SenderInfo",
    "TransactionFailed",
    "TransactionRejected",
    "TranscoderInfo",
    "parse_address",
]

#: Seconds one JSON-RPC request may take.
RPC_TIMEOUT_S: Final = 10.0
#: Seconds to wait for a transaction's receipt.
RECEIPT_TIMEOUT_S: Final = 120.0
#: The tip offered when the node does not suggest one (1 gwei).
DEFAULT_PRIORITY_FEE: Final = 1_000_000_000
#: A transaction unmined this long is replaced with higher fees (Arbitrum mines in seconds).
REPLACE_AFTER_S: Final = 30.0
MAX_REPLACEMENTS: Final = 5
RECEIPT_POLL_S: Final = 0.05
#: How TicketBroker is registered: go-livepeer looks it up as JobsManager.
_BROKER_NAMES: Final = ("TicketBroker", "JobsManager")

_T = TypeVar("_T")
log = logging.getLogger(__name__)


# ---- errors ---------------------------------------------------------------------------


class ContractNotRegistered(ChainError):
    """Raised when the Controller has no address for a contract name."""


class InvalidDevChain(ChainError):
    """Raised when a devchain file is unreadable or lacks what ``farm chain dev`` writes."""


class NoSigningKey(ChainError):
    """Raised when a read-only client (no private key) is asked to send a transaction."""


class TransactionFailed(ChainError):
    """Raised when a transaction is mined with status 0; ``receipt`` is the receipt."""

    def __init__(self, message: str, tx_hash: bytes, receipt: TxReceipt) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash
        self.receipt = receipt


#: Output types a lean eth_call decodes (chain.client.ChainClient.call): no addresses (web3
#: checksums those), nothing dynamic.
_LEAN_TYPE: Final = re.compile(r"(\(|\)|,|uint\d*|int\d*|bool|bytes(?:[1-9]|[12]\d|3[012]))+")

_UNAVAILABLE: Final = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TimeExhausted,
    ConnectionError,
    TimeoutError,
)


#: HTTP statuses of a node (or the proxy before it) that is overloaded or down for now.
_RETRYABLE_HTTP: Final = frozenset({429, 500, 502, 503, 504})


def _reason(error: ContractLogicError) -> str:
    return _revert_text(str(error.message if error.message else error))


def _revert_text(message: str) -> str:
    """The revert reason in a node's error message."""
    return message.removeprefix("execution reverted: ").removeprefix("execution reverted")


@contextmanager
def _wrapped(what: str) -> Iterator[None]:
    """Translate web3 and transport errors into the chain package's hierarchy."""
    try:
        yield
    except ChainError:
        raise
    except _UNAVAILABLE as e:
        raise ChainUnavailable(f"{what}: node unavailable: {e}") from e
    except ContractLogicError as e:
        reason = _reason(e)
        raise ContractReverted(f"{what} reverted: {reason}", reason) from e
    except requests.exceptions.HTTPError as e:
        # A node in trouble, or a URL that is no JSON-RPC endpoint (404, 405, 501, ...).
        status = e.response.status_code if e.response is not None else 0
        if status in _RETRYABLE_HTTP:
            raise ChainUnavailable(f"{what}: node unavailable: {e}") from e
        raise ChainError(f"{what}: not an Ethereum JSON-RPC endpoint: {e}") from e
    except Web3RPCError as e:
        raise TransactionRejected(f"{what}: {e}") from e
    except (Web3Exception, ValueError) as e:
        raise ChainError(f"{what}: {e}") from e


# ---- views ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TranscoderInfo:
    """The fields of ``BondingManager.getTranscoder`` the services use."""

    last_reward_round: int
    reward_cut: int
    fee_share: int
    activation_round: int
    deactivation_round: int


def _hex(address: bytes | str) -> ChecksumAddress:
    """A checksummed address from 20 bytes or hex."""
    if isinstance(address, bytes):
        if len(address) != 20:
            raise ValueError(f"an address is 20 bytes, got {len(address)}")
        return to_checksum_address("0x" + address.hex())
    return to_checksum_address(address)


def parse_address(text: str) -> ChecksumAddress:
    """An address a person typed, checksummed: ``0x`` and 40 hex digits, in one case or with
    a valid EIP-55 checksum (mixed case with a wrong one is a typo). Raises ValueError."""
    if not is_hex_address(text) or not text.startswith(("0x", "0X")):
        raise ValueError(f"{text!r} is not an address (0x and 40 hex digits)")
    digits = text[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(text):
        raise ValueError(f"{text!r} has a wrong EIP-55 checksum (a typo?)")
    return to_checksum_address(text)


def _key_bytes(key: bytes | str) -> bytes:
    return bytes.fromhex(key.removeprefix("0x")) if isinstance(key, str) else key


def _read_devchain(path: Path) -> Mapping[str, Any]:
    """The JSON ``farm chain dev`` wrote; InvalidDevChain when unreadable or not JSON."""
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise InvalidDevChain(f"cannot read devchain file {path}: {e.strerror or e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidDevChain(f"devchain file {path} is not JSON: {e}") from e
    if not isinstance(data, Mapping):
        raise InvalidDevChain(f"devchain file {path} does not hold a JSON object")
    return data


# ---- the client -------------------------------------------------------------------------


class ChainClient:
    """Livepeer's contracts over JSON-RPC; reads for anyone, writes with ``private_key``."""

    def __init__(
        self,
        rpc_url: str,
        controller: str,
        *,
        private_key: bytes | None = None,
        max_gas_price_wei: int | None = None,
        rpc_timeout_s: float = RPC_TIMEOUT_S,
        receipt_timeout_s: float = RECEIPT_TIMEOUT_S,
        replace_after_s: float = REPLACE_AFTER_S,
        max_replacements: int = MAX_REPLACEMENTS,
    ) -> None:
        if max_gas_price_wei is not None and max_gas_price_wei <= 0:
            raise ValueError("max_gas_price_wei must be positive")
        # No retries inside web3: ChainUnavailable goes to the caller, which owns the policy.
        self.w3 = Web3(
            Web3.HTTPProvider(
                rpc_url,
                request_kwargs={"timeout": rpc_timeout_s},
                exception_retry_configuration=None,
            )
        )
        self.rpc_url = rpc_url
        self.controller_address = _hex(controller)
        self.max_gas_price_wei = max_gas_price_wei
        self.receipt_timeout_s = receipt_timeout_s
        self.replace_after_s = replace_after_s
        self.max_replacements = max_replacements
        self._account: LocalAccount | None = (
            Account.from_key(private_key) if private_key is not None else None
        )
        self._contracts: dict[str, Contract] = {}
        self._nonces: dict[str, int] = {}
        self._lock = threading.Lock()
        self._chain_id: int | None = None
        self._lean: dict[tuple[str, str, str, str], tuple[str, str, list[str]] | None] = {}
        self._views: dict[tuple[str, str, tuple[Any, ...]], tuple[str, str, list[str]]] = {}

    def __repr__(self) -> str:  # never show the key
        return f"ChainClient({self.rpc_url}, controller={self.controller_address})"

    @classmethod
    def from_devchain(
        cls,
        info: DevChain | Mapping[str, Any] | str | Path,
        *,
        role: str = "orchestrator",
        max_gas_price_wei: int | None = None,
    ) -> ChainClient:
        """A client for what ``chain.devchain.bootstrap`` wrote (the dataclass, its JSON dict
        or the JSON file), signing as ``role`` (orchestrator, broadcaster or deployer)."""
        data: Mapping[str, Any]
        if isinstance(info, str | Path):
            data = _read_devchain(Path(info))
        elif isinstance(info, Mapping):
            data = info
        else:
            data = info.to_json()
        try:
            account = data[role]
            key = account["private_key"] if isinstance(account, Mapping) else account.private_key
            return cls(
                data["rpc_url"],
                data["contracts"]["Controller"],
                private_key=_key_bytes(key),
                max_gas_price_wei=max_gas_price_wei,
            )
        except KeyError as e:
            raise InvalidDevChain(f"devchain has no {e} (written by `farm chain dev`?)") from e
        except (TypeError, ValueError) as e:
            raise InvalidDevChain(f"invalid devchain ({role}): {e}") from e

    # ---- identity and contracts --------------------------------------------------------

    @property
    def address(self) -> bytes | None:
        """The signing account's address, None for a read-only client."""
        return bytes.fromhex(self._account.address[2:]) if self._account else None

    def contract(self, name: str) -> Contract:
        """A Livepeer contract by its Controller name, resolved once and cached."""
        cached = self._contracts.get(name)
        if cached is not None:
            return cached
        names = _BROKER_NAMES if name == "TicketBroker" else (name,)
        controller = self.w3.eth.contract(address=self.controller_address, abi=abi("Controller"))
        for candidate in names:
            address = str(self.call(controller.functions.getContract(contract_id(candidate))))
            if bytes.fromhex(address[2:]) != ZERO_ADDRESS:
                found: Contract = self.w3.eth.contract(address=_hex(address), abi=abi(name))
                self._contracts[name] = found
                return found
        raise ContractNotRegistered(f"the Controller has no address for {name}")

    @property
    def broker(self) -> Contract:
        """TicketBroker."""
        return self.contract("TicketBroker")

    @property
    def bonding(self) -> Contract:
        """BondingManager."""
        return self.contract("BondingManager")

    @property
    def rounds(self) -> Contract:
        """RoundsManager."""
        return self.contract("RoundsManager")

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        with _wrapped(what):
            return fn()

    def call(self, fn: ContractFunction, *, sender: bytes | None = None) -> Any:
        """eth_call a contract function in the latest block (from ``sender`` if given).

        The node's reads run behind every segment (chainview.CachedChain refreshes them), so
        they skip web3's per-call machinery: the call data is ABI-encoded once per function
        and arguments and the answer decoded with eth_abi, one JSON-RPC round trip and about
        a tenth of the CPU. Functions returning addresses or dynamic types go through web3.
        """
        origin = sender if sender is not None else self.address
        lean = self._lean_call(fn)
        if lean is None:
            tx: TxParams = {}
            if origin is not None:
                tx["from"] = _hex(origin)
            return self._call(fn.fn_name, lambda: fn.call(tx))
        return self._eth_call(lean, fn.fn_name, origin)

    def _eth_call(self, lean: tuple[str, str, list[str]], name: str, origin: bytes | None) -> Any:
        to, data, outputs = lean
        params: dict[str, str] = {"to": to, "data": data}
        if origin is not None:
            params["from"] = _hex(origin)
        result = self._rpc("eth_call", [params, "latest"], name)
        try:
            values = abi_decode(outputs, HexBytes(result))
        except Exception as e:  # an answer that is not the function's return data
            raise ChainError(f"{name}: undecodable answer: {e}") from e
        return values[0] if len(values) == 1 else tuple(values)

    def _view(self, contract: str, name: str, *args: Any) -> Any:
        """``call`` of the protocol contract ``contract`` (rounds, broker, bonding) function
        ``name``. The same read again builds no web3 function: its call data is kept."""
        key = (contract, name, args)
        lean = self._views.get(key)
        if lean is None:
            fn = getattr(self, contract).functions[name](*args)
            lean = self._lean_call(fn)
            if lean is None:
                return self.call(fn)
            if len(self._views) > 1_000:  # arguments (senders) come and go
                self._views.clear()
            self._views[key] = lean
        return self._eth_call(lean, name, self.address)

    def _rpc(self, method: str, params: list[Any], what: str | None = None) -> Any:
        """One JSON-RPC request straight to the provider; its ``result``. Errors name
        ``what`` (default: the method)."""
        what = what or method
        with _wrapped(what):
            response = self.w3.provider.make_request(RPCEndpoint(method), params)
        error = response.get("error")
        if error is None and "result" in response:
            return response["result"]
        message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        if "revert" in message:
            reason = _revert_text(message)
            raise ContractReverted(f"{what} reverted: {reason}", reason)
        raise ChainError(f"{what}: {message}")

    def _quantity(self, method: str) -> int:
        """A JSON-RPC method answering one hex quantity (eth_blockNumber, eth_gasPrice)."""
        result = self._rpc(method, [])
        try:
            return int(result, 16)
        except (TypeError, ValueError) as e:
            raise ChainError(f"{method}: not a quantity: {result!r}") from e

    def _lean_call(self, fn: ContractFunction) -> tuple[str, str, list[str]] | None:
        """(to, call data, output types) for ``fn`` when its outputs are static numbers,
        booleans, fixed bytes or tuples of them; None otherwise."""
        key = (fn.address, fn.fn_name, repr(fn.args), repr(fn.kwargs))
        hit = self._lean.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        outputs = [collapse_if_tuple(dict(o)) for o in fn.abi.get("outputs", [])]
        plain = not fn.kwargs and all(_LEAN_TYPE.fullmatch(t) for t in outputs)
        lean: tuple[str, str, list[str]] | None = None
        if plain:
            inputs = [collapse_if_tuple(dict(i)) for i in fn.abi.get("inputs", [])]
            selector = function_abi_to_4byte_selector(fn.abi)
            data = selector + abi_encode(inputs, list(fn.args))
            lean = (str(fn.address), "0x" + data.hex(), outputs)
        if len(self._lean) > 1_000:  # arguments (senders) come and go
            self._lean.clear()
        self._lean[key] = lean
        return lean

    # ---- Broker and reads --------------------------------------------------------------

    def withdraw_round(self, sender: bytes) -> int:
        """The round the sender's unlock completes, 0 when it is not unlocking."""
        return self.sender_info(sender).withdraw_round

    def last_initialized_round(self) -> int:
        """The last round RoundsManager initialized."""
        return int(self._view("rounds", "lastInitializedRound"))

    def last_seen_l1_block(self) -> int:
        """The latest block number."""
        return self._quantity("eth_blockNumber")

    def current_round(self) -> int:
        """The round of the latest block."""
        return int(self._view("rounds", "currentRound"))

    def current_round_initialized(self) -> bool:
        """Whether initializeRound ran for the current round."""
        return bool(self.call(self.rounds.functions.currentRoundInitialized()))

    def round_length(self) -> int:
        """Blocks per round."""
        return int(self.call(self.rounds.functions.roundLength()))

    def block_hash_for_round(self, round: int) -> bytes:
        """The block hash RoundsManager stored for ``round`` (zero when not initialized)."""
        return bytes(self._view("rounds", "blockHashForRound", round))

    def ticket_validity_period(self) -> int:
        """Rounds a ticket stays redeemable after its creation round."""
        return int(self.call(self.broker.functions.ticketValidityPeriod()))

    def sender_info(self, sender: bytes) -> SenderInfo:
        """The sender's deposit, withdraw round and reserve."""
        info, reserve = self._view("broker", "getSenderInfo", _hex(sender))
        return SenderInfo(
            deposit=int(info[0]),
            withdraw_round=int(info[1]),
            reserve=int(reserve[0]),
            reserve_claimed_in_current_round=int(reserve[1]),
        )

    def claimable_reserve(self, sender: bytes, recipient: bytes) -> int:
        """What ``recipient`` may still draw from the sender's reserve this round: an equal
        share per transcoder in the pool, less what it drew, 0 when it is not active."""
        return int(self._view("broker", "claimableReserve", _hex(sender), _hex(recipient)))

    def max_float(self, sender: bytes, recipient: bytes, *, pending: int = 0) -> int:
        """What ``sender`` can pay ``recipient`` now: its deposit plus the recipient's
        reserve allocation, less ``pending`` (face values of redemptions in flight)."""
        deposit = self.sender_info(sender).deposit
        return max(0, deposit + self.claimable_reserve(sender, recipient) - pending)

    def gas_price(self) -> int:
        """The node's suggested gas price (eth_gasPrice)."""
        return self._quantity("eth_gasPrice")

    def used(self, ticket_hash: bytes) -> bool:
        """Whether TicketBroker has redeemed the ticket with this hash."""
        return bool(self.call(self.broker.functions.usedTickets(ticket_hash)))

    def fees(self, transcoder: bytes) -> int:
        """The transcoder's fees not yet withdrawn (``pendingFees``)."""
        # The round argument is ignored by the deployed BondingManager (claims run to now).
        return int(self.call(self.bonding.functions.pendingFees(_hex(transcoder), 0)))

    def transcoder_info(self, transcoder: bytes) -> TranscoderInfo:
        """The transcoder's reward round, cut, share and activation window."""
        t = self.call(self.bonding.functions.getTranscoder(_hex(transcoder)))
        return TranscoderInfo(
            last_reward_round=int(t[0]),
            reward_cut=int(t[1]),
            fee_share=int(t[2]),
            activation_round=int(t[4]),
            deactivation_round=int(t[5]),
        )

    def transcoder_pool(self, limit: int = 1000) -> list[bytes]:
        """The transcoder pool in the BondingManager's order (at most ``limit`` addresses)."""
        pool: list[bytes] = []
        address = str(self.call(self.bonding.functions.getFirstTranscoderInPool()))
        while len(pool) < limit and bytes.fromhex(address[2:]) != ZERO_ADDRESS:
            pool.append(bytes.fromhex(address[2:]))
            address = str(self.call(self.bonding.functions.getNextTranscoderInPool(address)))
        return pool

    def is_active_transcoder(self, transcoder: bytes) -> bool:
        """Whether the transcoder is in the active set this round."""
        return bool(self._view("bonding", "isActiveTranscoder", _hex(transcoder)))

    def find_redemption(
        self, ticket: Ticket, *, lookback_blocks: int
    ) -> tuple[bytes, bytes] | None:
        """(tx hash, tx sender) of the transaction whose WinningTicketRedeemed log names
        ``ticket``, searched over the last ``lookback_blocks`` blocks; None when not found
        (or when the node refuses the log query, as some do for long ranges)."""
        latest = self.last_seen_l1_block()
        event = self.broker.events.WinningTicketRedeemed()
        try:
            logs = self._call(
                "eth_getLogs",
                lambda: event.get_logs(
                    from_block=max(0, latest - lookback_blocks),
                    to_block=latest,
                    argument_filters={
                        "sender": _hex(ticket.sender),
                        "recipient": _hex(ticket.recipient),
                    },
                ),
            )
        except ChainUnavailable:
            raise
        except ChainError:
            return None
        for log in logs:
            if redeemed_ticket(log["args"]) == ticket:
                tx_hash = log["transactionHash"]
                tx = self._call(
                    "eth_getTransactionByHash", partial(self.w3.eth.get_transaction, tx_hash)
                )
                return bytes(tx_hash), bytes.fromhex(str(tx["from"])[2:])
        return None

    def revert_reason(self, fn: ContractFunction, *, sender: bytes | None = None) -> str | None:
        """Simulate ``fn`` as a transaction sent now would run: None when it would succeed,
        else the revert reason.

        The simulation (eth_call) runs on the pending block, the one a transaction sent now is
        mined in, not the latest: on the last block of a round, ``initializeRound`` is refused
        in the latest block and succeeds in the next.
        """
        tx: TxParams = {}
        origin = sender if sender is not None else self.address
        if origin is not None:
            tx["from"] = _hex(origin)
        try:
            self._call(fn.fn_name, lambda: fn.call(tx, block_identifier="pending"))
        except ContractReverted as e:
            return e.reason or "reverted without a reason"
        return None

    # ---- redemption --------------------------------------------------------------------

    def _redeem_fn(self, ticket: SignedTicket) -> ContractFunction:
        return self.broker.functions.redeemWinningTicket(
            ticket_tuple(ticket.ticket), ticket.sig, ticket.recipient_rand
        )

    def _batch_redeem_fn(self, tickets: Sequence[SignedTicket]) -> ContractFunction:
        return self.broker.functions.batchRedeemWinningTickets(
            [ticket_tuple(t.ticket) for t in tickets],
            [t.sig for t in tickets],
            [t.recipient_rand for t in tickets],
        )

    def estimate_redeem(self, ticket: SignedTicket) -> int:
        """The gas ``redeemWinningTicket`` of this ticket alone takes if sent now; raises
        ContractReverted with the contract's reason when it would revert."""
        return self.estimate_gas(self._redeem_fn(ticket))

    def estimate_batch_redeem(self, tickets: Sequence[SignedTicket]) -> int:
        """The node's estimate for ``batchRedeemWinningTickets`` of these tickets."""
        return self.estimate_gas(self._batch_redeem_fn(tickets))

    def redeem_winning_ticket(self, ticket: SignedTicket, *, gas: int) -> RedeemTx:
        """Send ``redeemWinningTicket`` with this gas limit; see :class:`chain.broker.Broker`."""
        return self._redeem(self._redeem_fn(ticket), gas)

    def batch_redeem_winning_tickets(
        self, tickets: Sequence[SignedTicket], *, gas: int
    ) -> RedeemTx:
        """Send ``batchRedeemWinningTickets`` with this gas limit."""
        return self._redeem(self._batch_redeem_fn(tickets), gas)

    def _redeem(self, fn: ContractFunction, gas: int) -> RedeemTx:
        try:
            receipt = self.transact(fn, gas=gas)
        except TransactionFailed as e:
            receipt = e.receipt
        succeeded = receipt["status"] == 1
        return RedeemTx(
            tx_hash=bytes(receipt["transactionHash"]),
            gas_used=int(receipt["gasUsed"]),
            succeeded=succeeded,
            redeemed=self._redeemed_in(receipt) if succeeded else frozenset(),
        )

    def _redeemed_in(self, receipt: TxReceipt) -> frozenset[bytes]:
        """The hashes of the tickets a receipt's WinningTicketRedeemed logs name."""
        events = self.broker.events.WinningTicketRedeemed().process_receipt(receipt, errors=DISCARD)
        tickets = (redeemed_ticket(event["args"]) for event in events)
        hashes = {t.hash() for t in tickets if t is not None}
        return frozenset(hashes)

    # ---- ServiceRegistry ---------------------------------------------------------------

    @property
    def service_registry(self) -> Contract:
        """ServiceRegistry, where orchestrators advertise their service URI."""
        return self.contract("ServiceRegistry")

    def service_uri(self, address: bytes | str) -> str:
        """The service URI ``address`` advertises ("" when it set none)."""
        return str(self.call(self.service_registry.functions.getServiceURI(_hex(address))))

    def set_service_uri(self, uri: str) -> TxReceipt:
        """Advertise ``uri`` (``https://HOST:PORT``) as this account's service URI.

        Raises InvalidServiceURI for any other form and ContractReverted when a simulation
        says the registry would refuse it; nothing is sent in either case.
        """
        checked = parse_service_uri(uri)
        fn = self.service_registry.functions.setServiceURI(checked)
        reason = self.revert_reason(fn)
        if reason is not None:
            raise ContractReverted(f"setServiceURI would revert: {reason} (nothing sent)", reason)
        return self.transact(fn)

    def estimate_gas(self, fn: ContractFunction, *, sender: bytes | None = None) -> int:
        """The gas ``fn`` needs as a transaction sent now (eth_estimateGas on the pending
        block). Raises ContractReverted with the reason when it would revert."""
        tx: TxParams = {}
        origin = sender if sender is not None else self.address
        if origin is not None:
            tx["from"] = _hex(origin)
        return int(
            self._call(
                f"estimate {fn.fn_name}", lambda: fn.estimate_gas(tx, block_identifier="pending")
            )
        )

    # ---- transactions ------------------------------------------------------------------

    def fee_caps(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) for the next transaction.

        Raises GasPriceTooHigh when the base fee alone is above ``max_gas_price_wei``.
        """

        def read() -> tuple[int, int]:
            block = self.w3.eth.get_block("latest")
            base = int(block.get("baseFeePerGas", 0) or 0)
            try:
                tip = int(self.w3.eth.max_priority_fee)
            except (Web3RPCError, ValueError):
                tip = DEFAULT_PRIORITY_FEE
            return base, tip

        base, tip = self._call("fee data", read)
        max_fee = 2 * base + tip
        if self.max_gas_price_wei is not None:
            if base > self.max_gas_price_wei:
                raise GasPriceTooHigh(
                    f"base fee {base} wei exceeds the maximum gas price {self.max_gas_price_wei}"
                )
            max_fee = min(max_fee, self.max_gas_price_wei)
        return max_fee, min(tip, max_fee - base) if max_fee > base else 0

    def transact(
        self,
        fn: ContractFunction,
        *,
        gas: int | None = None,
        value: int = 0,
        private_key: bytes | None = None,
    ) -> TxReceipt:
        """Sign and send ``fn``, wait for its receipt and check its status.

        ``gas`` is the explicit gas limit (no estimate); ``private_key`` signs instead of the
        client's own key. Raises GasPriceTooHigh, ContractReverted (the estimate reverted),
        TransactionRejected, TransactionFailed (status 0) or ChainUnavailable.
        """
        account = Account.from_key(private_key) if private_key is not None else self._account
        if account is None:
            raise NoSigningKey("this client has no private key: it cannot send transactions")
        what = fn.fn_name
        max_fee, tip = self.fee_caps()
        tx: TxParams = {
            "from": account.address,
            "value": Wei(value),
            "maxFeePerGas": Wei(max_fee),
            "maxPriorityFeePerGas": Wei(tip),
            "chainId": self.chain_id(),
        }
        if gas is None:
            gas = int(self._call(f"estimate {what}", lambda: fn.estimate_gas(tx)))
        tx["gas"] = gas
        with self._lock:
            nonce = self._next_nonce(account.address)
            tx["nonce"] = Nonce(nonce)
            try:
                tx_hash = self._sign_and_send(account, fn, tx)
            except ChainError:
                self._nonces.pop(account.address, None)  # re-read from the node next time
                raise
            self._nonces[account.address] = nonce + 1
        try:
            receipt = self._await_receipt(account, fn, tx, tx_hash)
        except ChainUnavailable:
            with self._lock:
                self._nonces.pop(account.address, None)
            raise
        tx_hash = receipt["transactionHash"]
        if receipt["status"] != 1:
            raise TransactionFailed(
                f"transaction failed txHash=0x{bytes(tx_hash).hex()} ({what})",
                bytes(tx_hash),
                receipt,
            )
        return receipt

    def _sign_and_send(self, account: LocalAccount, fn: ContractFunction, tx: TxParams) -> bytes:
        what = fn.fn_name
        built = self._call(f"build {what}", lambda: fn.build_transaction(tx))
        signed = account.sign_transaction(cast(dict[str, Any], built))
        return bytes(
            self._call(
                f"send {what}", lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction)
            )
        )

    def _receipt(self, tx_hash: bytes) -> TxReceipt | None:
        def read() -> TxReceipt | None:
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None  # still pending (or dropped, then a replacement goes out)

        return self._call("receipt", read)

    def _await_receipt(
        self, account: LocalAccount, fn: ContractFunction, tx: TxParams, first: bytes
    ) -> TxReceipt:
        """The receipt of ``first`` or of a replacement: a transaction still unmined after
        ``replace_after_s`` is sent again with the same nonce and fees raised by at least
        12.5 % (nodes want 10 %), at most ``max_replacements`` times and never above
        ``max_gas_price_wei``. Whichever of them is mined wins; the nonce allows one.
        """
        hashes = [first]
        started = last_send = time.monotonic()
        while True:
            for h in reversed(hashes):
                receipt = self._receipt(h)
                if receipt is not None:
                    return receipt
            now = time.monotonic()
            if now - started > self.receipt_timeout_s:
                raise ChainUnavailable(
                    f"no receipt for {fn.fn_name} after {self.receipt_timeout_s:g} s "
                    f"(txHash=0x{hashes[-1].hex()}, {len(hashes) - 1} replacement(s))"
                )
            if now - last_send >= self.replace_after_s and len(hashes) <= self.max_replacements:
                last_send = now
                bumped = self._bumped(tx)
                if bumped is not None:
                    try:
                        hashes.append(self._sign_and_send(account, fn, bumped))
                        tx.update(bumped)
                        log.warning(
                            "%s stuck for %.0f s: replaced nonce %s with maxFeePerGas %s "
                            "(txHash=0x%s)",
                            fn.fn_name,
                            now - started,
                            tx["nonce"],
                            bumped["maxFeePerGas"],
                            hashes[-1].hex(),
                        )
                    except TransactionRejected as e:
                        # Mined meanwhile (nonce too low) or the node wants more: poll on.
                        log.info("replacement of %s not taken: %s", fn.fn_name, e)
            time.sleep(RECEIPT_POLL_S)

    def _bumped(self, tx: TxParams) -> TxParams | None:
        """``tx`` with fees raised for a replacement, or None when the cap allows no bump."""
        old_fee, old_tip = int(tx["maxFeePerGas"]), int(tx["maxPriorityFeePerGas"])
        try:
            fresh_fee, fresh_tip = self.fee_caps()
        except GasPriceTooHigh:
            fresh_fee, fresh_tip = 0, 0
        fee = max(-(-old_fee * 9 // 8) + 1, fresh_fee)
        tip = max(-(-old_tip * 9 // 8) + 1, fresh_tip)
        if self.max_gas_price_wei is not None and fee > self.max_gas_price_wei:
            fee = self.max_gas_price_wei
            if fee * 10 < old_fee * 11:
                return None  # too small a bump for a node to take it
        return {**tx, "maxFeePerGas": Wei(fee), "maxPriorityFeePerGas": Wei(min(tip, fee))}

    def chain_id(self) -> int:
        """The node's chain id (read once)."""
        if self._chain_id is None:
            self._chain_id = int(self._call("eth_chainId", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def _next_nonce(self, address: str) -> int:
        """The higher of the node's pending count and the nonce after our last send."""
        on_chain = int(
            self._call(
                "eth_getTransactionCount",
                lambda: self.w3.eth.get_transaction_count(_hex(address), "pending"),
            )
        )
        return max(on_chain, self._nonces.get(address, 0))
