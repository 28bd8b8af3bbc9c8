"""A local Livepeer-like chain: anvil from npm, our contracts deployed, one orchestrator bonded.

``start_anvil()`` runs the anvil binary of the npm package ``@foundry-rs/anvil`` pinned in
``chain/contracts/package.json`` (installed with ``npm ci`` on first use) on a free loopback
port. ``deploy(w3)`` deploys the contracts behind a Controller in the order Livepeer's deploy
uses; ``bootstrap(w3)`` then mints and bonds LPT for an orchestrator, registers it as a
transcoder, funds a broadcaster's deposit and reserve and initializes two rounds, so that
the orchestrator is active and tickets created in the current round can be redeemed; the
orchestrator advertises its service URI (``https://127.0.0.1:8935`` unless told otherwise) in
the ServiceRegistry.

Accounts are anvil's default funded accounts (the public ``test test ... junk`` mnemonic):
never use them anywhere but a local chain. ``python -m chain.devchain out.json`` starts anvil,
bootstraps it, writes the JSON and keeps running until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import RPCEndpoint, TxParams, TxReceipt, Wei

from chain.abi import contract_id, load_artifact
from chain.compile import CONTRACTS_DIR, NODE_MODULES, ensure_node_modules
from chain.service_uri import DEFAULT_DEV_SERVICE_URI
from chain.service_uri import parse as parse_service_uri

__all__ = [
    "ANVIL_KEYS",
    "Anvil",
    "BootstrapParams",
    "DeployParams",
    "DevAccount",
    "DevChain",
    "DevChainError",
    "anvil_binary",
    "bootstrap",
    "contracts",
    "deploy",
    "mine",
    "mine_to_next_round",
    "revert",
    "round_at",
    "snapshot",
    "start_anvil",
]

#: Private keys of anvil's first default accounts (public test keys, local chains only).
ANVIL_KEYS: Final = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
)
CHAIN_ID: Final = 31337
MINTER_ROLE: Final = Web3.keccak(text="MINTER_ROLE")
_NO_COMMIT: Final = bytes(20)
LPT: Final = 10**18


class DevChainError(RuntimeError):
    """anvil could not be installed or started, or a bootstrap transaction failed."""


# ---- anvil ------------------------------------------------------------------------------


def anvil_binary() -> Path:
    """The anvil executable from npm (installing chain/contracts' packages when absent).

    The platform package's native binary is preferred to the Node.js wrapper, so that
    stopping the process stops anvil itself.
    """
    ensure_node_modules()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform, "")
    native = NODE_MODULES / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if native.is_file() and os.access(native, os.X_OK):
        return native
    wrapper = NODE_MODULES / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    raise DevChainError(f"anvil is not installed under {NODE_MODULES}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Anvil:
    """A running anvil process on 127.0.0.1; stop it with :meth:`stop` or a ``with`` block."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        """The JSON-RPC endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def web3(self) -> Web3:
        """A Web3 client for this node."""
        return Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 30}))

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil (kill it if it does not exit within ``timeout`` seconds)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _rpc_ready(url: str) -> bool:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 1}))
    try:
        return bool(w3.is_connected())
    except Exception:
        return False


def start_anvil(
    *,
    port: int | None = None,
    accounts: int = 10,
    balance_eth: int = 10_000,
    startup_timeout: float = 20.0,
    extra_args: tuple[str, ...] = (),
) -> Anvil:
    """Start anvil on a free loopback port (or ``port``) and wait until it answers."""
    binary = anvil_binary()
    last_error = ""
    for _ in range(3):
        chosen = port if port is not None else _free_port()
        command = [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(chosen),
            "--chain-id",
            str(CHAIN_ID),
            "--accounts",
            str(accounts),
            "--balance",
            str(balance_eth),
            "--quiet",
            *extra_args,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=CONTRACTS_DIR
        )
        anvil = Anvil(process, chosen)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _rpc_ready(anvil.url):
                return anvil
            time.sleep(0.05)
        if process.poll() is None:
            process.terminate()
            process.wait(5)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        anvil.stop()
        last_error = stderr.strip()[-1000:] or "no answer on the RPC port"
        if port is not None:
            break
    raise DevChainError(f"anvil did not start: {last_error}")


# ---- accounts and parameters --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DevAccount:
    """A funded local account: checksummed address and its 0x-hex private key."""

    address: str
    private_key: str

    @classmethod
    def from_key(cls, private_key: str) -> DevAccount:
        """The account of a private key."""
        return cls(Account.from_key(private_key).address, private_key)

    def __repr__(self) -> str:  # keep keys out of logs and assertion output
        return f"DevAccount({self.address})"


@dataclass(frozen=True, slots=True)
class DeployParams:
    """Protocol parameters of the local deployment (Livepeer's units)."""

    round_length: int = 50
    #: The share (of 1,000,000) at the end of a round in which transcoder() is refused.
    round_lock_amount: int = 100_000
    unbonding_period: int = 7
    num_active_transcoders: int = 10
    unlock_period: int = 2
    ticket_validity_period: int = 2
    #: Inflation per round, its change, and the target bonding rate, in parts per 1e9.
    inflation: int = 500_000
    inflation_change: int = 500
    target_bonding_rate: int = 500_000_000


@dataclass(frozen=True, slots=True)
class BootstrapParams:
    """What bootstrap mints, bonds and funds."""

    lpt_minted: int = 10_000 * LPT
    stake: int = 1_000 * LPT
    #: Reward cut and fee share, out of 1,000,000.
    reward_cut: int = 100_000
    fee_share: int = 500_000
    deposit: int = 10**18
    reserve: int = 10**18
    #: What the orchestrator advertises in the ServiceRegistry (``https://HOST:PORT``).
    service_uri: str = DEFAULT_DEV_SERVICE_URI


@dataclass(frozen=True)
class DevChain:
    """The bootstrapped chain: where it runs, the contracts and the accounts."""

    rpc_url: str
    chain_id: int
    contracts: dict[str, str]
    deployer: DevAccount
    orchestrator: DevAccount
    broadcaster: DevAccount
    #: The round initialized last by bootstrap, in which the orchestrator is active.
    round: int
    round_length: int
    params: BootstrapParams = field(default_factory=BootstrapParams)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, private keys included (they are anvil's public test keys)."""
        data = asdict(self)
        data["params"] = asdict(self.params)
        return data

    def write(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, path: Path) -> DevChain:
        """Load what :meth:`write` wrote."""
        data = json.loads(path.read_text())
        return cls(
            rpc_url=data["rpc_url"],
            chain_id=data["chain_id"],
            contracts=data["contracts"],
            deployer=DevAccount(**data["deployer"]),
            orchestrator=DevAccount(**data["orchestrator"]),
            broadcaster=DevAccount(**data["broadcaster"]),
            round=data["round"],
            round_length=data["round_length"],
            params=BootstrapParams(**data["params"]),
        )


# ---- chain helpers --------------------------------------------------------------------


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    response = w3.provider.make_request(RPCEndpoint(method), params)
    if "error" in response:
        raise DevChainError(f"{method}: {response['error']}")
    return response.get("result")


def mine(w3: Web3, blocks: int = 1) -> None:
    """Mine ``blocks`` empty blocks at once (anvil_mine)."""
    if blocks > 0:
        _rpc(w3, "anvil_mine", [hex(blocks)])


def snapshot(w3: Web3) -> str:
    """Take an evm_snapshot; :func:`revert` returns to it."""
    return str(_rpc(w3, "evm_snapshot", []))


def revert(w3: Web3, snapshot_id: str) -> None:
    """Go back to a snapshot (which it consumes)."""
    if not _rpc(w3, "evm_revert", [snapshot_id]):
        raise DevChainError(f"evm_revert {snapshot_id} failed")


def contracts(w3: Web3, addresses: dict[str, str]) -> dict[str, Contract]:
    """Web3 contract objects for deployed addresses, by contract name."""
    return {
        name: w3.eth.contract(
            address=Web3.to_checksum_address(address), abi=load_artifact(name).abi
        )
        for name, address in addresses.items()
    }


def round_at(rounds_manager: Contract, block_number: int) -> tuple[int, int]:
    """(round, start block of that round) at ``block_number``, as RoundsManager computes."""
    length: int = rounds_manager.functions.roundLength().call()
    base_round: int = rounds_manager.functions.lastRoundLengthUpdateRound().call()
    base_block: int = rounds_manager.functions.lastRoundLengthUpdateStartBlock().call()
    elapsed = (block_number - base_block) // length
    return base_round + elapsed, base_block + elapsed * length


def mine_to_next_round(w3: Web3, rounds_manager: Contract) -> int:
    """Mine so that the next transaction lands in the first block of the next round; return
    that round."""
    latest = w3.eth.block_number
    current, start = round_at(rounds_manager, latest)
    length: int = rounds_manager.functions.roundLength().call()
    mine(w3, start + length - latest - 1)
    return current + 1


def _send(
    w3: Web3, fn: ContractFunction, sender: str, *, value: int = 0, gas: int | None = None
) -> TxReceipt:
    tx: TxParams = {"from": Web3.to_checksum_address(sender), "value": Wei(value)}
    if gas is not None:
        tx["gas"] = gas
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact(tx))
    if receipt["status"] != 1:
        raise DevChainError(f"{fn.fn_name} failed in tx {receipt['transactionHash'].hex()}")
    return receipt


def _deploy_one(w3: Web3, name: str, deployer: str, *args: Any) -> str:
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor(*args).transact({"from": deployer})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    address = receipt["contractAddress"]
    if receipt["status"] != 1 or address is None:
        raise DevChainError(f"deploying {name} failed")
    return str(address)


# ---- deploy and bootstrap ---------------------------------------------------------------


def deploy(
    w3: Web3,
    *,
    deployer: DevAccount | None = None,
    params: DeployParams | None = None,
) -> dict[str, str]:
    """Deploy the contracts behind a new Controller and unpause it; return name -> address.

    Order (reference 5.1): Controller; LivepeerToken; Minter (granted MINTER_ROLE);
    RoundsManager (round length, lock amount); BondingManager (unbonding period, active set
    size); TicketBroker, registered as TicketBroker and JobsManager (unlock period, ticket
    validity period); ServiceRegistry; then unpause.
    """
    account = deployer or DevAccount.from_key(ANVIL_KEYS[0])
    p = params or DeployParams()
    me = account.address
    controller_address = _deploy_one(w3, "Controller", me)
    controller = contracts(w3, {"Controller": controller_address})["Controller"]
    addresses = {"Controller": controller_address}

    def register(name: str, address: str) -> None:
        fn = controller.functions.setContractInfo(contract_id(name), address, _NO_COMMIT)
        _send(w3, fn, me)

    def add(name: str, *args: Any) -> Contract:
        address = _deploy_one(w3, name, me, *args)
        addresses[name] = address
        register(name, address)
        return contracts(w3, {name: address})[name]

    token = add("LivepeerToken")
    add("Minter", controller_address, p.inflation, p.inflation_change, p.target_bonding_rate)
    _send(w3, token.functions.grantRole(MINTER_ROLE, addresses["Minter"]), me)

    rounds = add("RoundsManager", controller_address)
    _send(w3, rounds.functions.setRoundLength(p.round_length), me)
    _send(w3, rounds.functions.setRoundLockAmount(p.round_lock_amount), me)

    bonding = add("BondingManager", controller_address)
    _send(w3, bonding.functions.setUnbondingPeriod(p.unbonding_period), me)
    _send(w3, bonding.functions.setNumActiveTranscoders(p.num_active_transcoders), me)

    broker = add("TicketBroker", controller_address)
    register("JobsManager", addresses["TicketBroker"])
    _send(w3, broker.functions.setUnlockPeriod(p.unlock_period), me)
    _send(w3, broker.functions.setTicketValidityPeriod(p.ticket_validity_period), me)

    add("ServiceRegistry", controller_address)

    _send(w3, controller.functions.unpause(), me)
    return addresses


def bootstrap(
    w3: Web3,
    out_path: Path | None = None,
    *,
    addresses: dict[str, str] | None = None,
    params: BootstrapParams | None = None,
    deploy_params: DeployParams | None = None,
    deployer: DevAccount | None = None,
    orchestrator: DevAccount | None = None,
    broadcaster: DevAccount | None = None,
) -> DevChain:
    """Deploy (unless ``addresses`` is given) and bring up one active orchestrator and one
    funded broadcaster (reference 5.2); write the result to ``out_path`` if given.

    1. Mint LPT to the orchestrator; it approves the BondingManager.
    2. At the start of a fresh round N: initializeRound; the orchestrator bonds to itself
       and calls transcoder(rewardCut, feeShare) (outside the lock period); it becomes
       active in N+1. The broadcaster calls fundDepositAndReserve.
    3. Mine to round N+1 and initializeRound. reward() is left to the caller.
    4. The orchestrator advertises ``params.service_uri`` in the ServiceRegistry.
    """
    p = params or BootstrapParams()
    parse_service_uri(p.service_uri)  # refused before anything is deployed
    owner = deployer or DevAccount.from_key(ANVIL_KEYS[0])
    orch = orchestrator or DevAccount.from_key(ANVIL_KEYS[1])
    sender = broadcaster or DevAccount.from_key(ANVIL_KEYS[2])
    if addresses is None:
        addresses = deploy(w3, deployer=owner, params=deploy_params)
    c = contracts(w3, addresses)
    token, rounds = c["LivepeerToken"], c["RoundsManager"]
    bonding, broker = c["BondingManager"], c["TicketBroker"]
    me = owner.address

    _send(w3, token.functions.grantRole(MINTER_ROLE, me), me)
    _send(w3, token.functions.mint(orch.address, p.lpt_minted), me)
    _send(w3, token.functions.revokeRole(MINTER_ROLE, me), me)
    _send(w3, token.functions.approve(addresses["BondingManager"], p.stake), orch.address)

    # Explicit gas limits at round boundaries: an estimate in the old round can differ.
    mine_to_next_round(w3, rounds)
    _send(w3, rounds.functions.initializeRound(), me, gas=1_000_000)
    _send(w3, bonding.functions.bond(p.stake, orch.address), orch.address)
    _send(w3, bonding.functions.transcoder(p.reward_cut, p.fee_share), orch.address)
    fund = broker.functions.fundDepositAndReserve(p.deposit, p.reserve)
    _send(w3, fund, sender.address, value=p.deposit + p.reserve)

    mine_to_next_round(w3, rounds)
    _send(w3, rounds.functions.initializeRound(), me, gas=1_000_000)
    current = cast(int, rounds.functions.currentRound().call())
    if "ServiceRegistry" in c:  # absent from an older deployment passed in ``addresses``
        registry = c["ServiceRegistry"]
        _send(w3, registry.functions.setServiceURI(p.service_uri), orch.address)

    chain = DevChain(
        rpc_url=_endpoint(w3),
        chain_id=w3.eth.chain_id,
        contracts=dict(addresses),
        deployer=owner,
        orchestrator=orch,
        broadcaster=sender,
        round=current,
        round_length=cast(int, rounds.functions.roundLength().call()),
        params=p,
    )
    if out_path is not None:
        chain.write(out_path)
    return chain


def _endpoint(w3: Web3) -> str:
    uri = getattr(w3.provider, "endpoint_uri", None)
    return str(uri) if uri else ""


def main(argv: list[str] | None = None) -> int:
    """``python -m chain.devchain [out.json] [--service-uri URL]``: run a bootstrapped anvil
    until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m chain.devchain")
    parser.add_argument("out", nargs="?", type=Path, default=Path("devchain.json"))
    parser.add_argument(
        "--service-uri",
        default=DEFAULT_DEV_SERVICE_URI,
        help="what the orchestrator advertises in the ServiceRegistry (https://HOST:PORT)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out: Path = args.out
    try:
        params = BootstrapParams(service_uri=parse_service_uri(args.service_uri))
    except ValueError as e:
        print(f"--service-uri: {e}", file=sys.stderr)
        return 2
    if shutil.which("node") is None and not NODE_MODULES.exists():
        print("Node.js is needed to install anvil", file=sys.stderr)
        return 1
    with start_anvil() as anvil:
        chain = bootstrap(anvil.web3(), out, params=params)
        print(f"anvil at {anvil.url}; round {chain.round}; wrote {out}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            anvil.process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
