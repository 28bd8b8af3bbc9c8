"""``farm chain``: livepeer_cli's role — status, rounds, staking, fees, deposits, tickets.

Every command reads ``FARM_ETH_RPC_URL`` / ``FARM_ETH_CONTROLLER`` / ``FARM_ETH_PRIVATE_KEY``
(or ``--devchain FILE`` written by ``farm chain dev``) and prints one readable block or line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from farm.settings import ClusterSettings

__all__ = ["chain_group"]

LPT = 10**18
ETH = 10**18


def _client(ctx: click.Context) -> Any:
    from chain.client import ChainClient

    devchain: Path | None = ctx.obj.get("devchain")
    if devchain is not None:
        return ChainClient.from_devchain(devchain, role=ctx.obj.get("role", "orchestrator"))
    from farm.cli.cluster import _load

    settings: ClusterSettings = _load(ClusterSettings)
    if not settings.eth_rpc_url or not settings.eth_controller:
        raise click.ClickException(
            "no chain configured: set FARM_ETH_RPC_URL and FARM_ETH_CONTROLLER (and "
            "FARM_ETH_PRIVATE_KEY to send transactions), or pass --devchain FILE"
        )
    key = settings.eth_private_key
    return ChainClient(
        settings.eth_rpc_url,
        settings.eth_controller,
        private_key=bytes.fromhex(key.get_secret_value().removeprefix("0x")) if key else None,
        max_gas_price_wei=settings.max_gas_price_wei,
    )


def _send(ctx: click.Context, what: str, fn: Any, **kwargs: Any) -> None:
    from chain.errors import ChainError

    client = _client(ctx)
    try:
        receipt = client.transact(fn(client), **kwargs)
    except ChainError as e:
        raise click.ClickException(f"{what} failed: {e}") from e
    click.echo(
        f"{what}: ok (tx 0x{bytes(receipt['transactionHash']).hex()}, gas {receipt['gasUsed']})"
    )


def _me(client: Any) -> str:
    if client.address is None:
        raise click.ClickException("no private key: set FARM_ETH_PRIVATE_KEY")
    return str(client._account.address)


@click.group("chain")
@click.option(
    "--devchain",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Use the chain `farm chain dev` wrote to this file.",
)
@click.option(
    "--as",
    "role",
    type=click.Choice(["orchestrator", "broadcaster", "deployer"]),
    default="orchestrator",
    show_default=True,
    help="Devchain account to act as.",
)
@click.pass_context
def chain_group(ctx: click.Context, devchain: Path | None, role: str) -> None:
    """Livepeer on chain: rounds, staking, reward, fees, deposit and reserve, tickets."""
    ctx.obj = {"devchain": devchain, "role": role}


@chain_group.command("dev")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("devchain.json"),
    show_default=True,
)
def dev_cmd(out: Path) -> None:
    """Start anvil, deploy the contracts, bootstrap an orchestrator and a funded sender."""
    from chain.devchain import main

    raise SystemExit(main([str(out)]))


@chain_group.command("status")
@click.pass_context
def status_cmd(ctx: click.Context) -> None:
    """Round, the account's stake, reward, fees, deposit and reserve."""
    client = _client(ctx)
    lines = {
        "round": f"{client.current_round()} "
        f"({'initialized' if client.current_round_initialized() else 'not initialized'})",
        "block": str(client.last_seen_l1_block()),
        "gas price": f"{client.gas_price() / 1e9:.3f} gwei",
    }
    if client.address is not None:
        me = client.address
        bonding = client.bonding
        delegator = client.call(bonding.functions.getDelegator(_me(client)))
        t = client.transcoder_info(me)
        sender = client.sender_info(me)
        lines.update(
            {
                "account": "0x" + me.hex(),
                "bonded": f"{delegator[0] / LPT:g} LPT to {delegator[2]}",
                "orchestrator": "active" if client.is_active_transcoder(me) else "not active",
                "reward cut / fee share": f"{t.reward_cut / 1e4:g} % / {t.fee_share / 1e4:g} %",
                "last reward round": str(t.last_reward_round),
                "pending fees": f"{client.fees(me) / ETH:g} ETH",
                "deposit / reserve": f"{sender.deposit / ETH:g} / {sender.reserve / ETH:g} ETH",
            }
        )
    width = max(map(len, lines))
    for k, v in lines.items():
        click.echo(f"{k:<{width}}  {v}")


@chain_group.command("round")
@click.option("--initialize", is_flag=True, help="Initialize the current round.")
@click.pass_context
def round_cmd(ctx: click.Context, initialize: bool) -> None:
    """Show the current round, or initialize it."""
    client = _client(ctx)
    if initialize:
        _send(ctx, "initializeRound", lambda c: c.rounds.functions.initializeRound(), gas=1_000_000)
        return
    click.echo(
        json.dumps(
            {
                "round": client.current_round(),
                "initialized": client.current_round_initialized(),
                "length": client.round_length(),
            }
        )
    )


@chain_group.command("reward")
@click.pass_context
def reward_cmd(ctx: click.Context) -> None:
    """Claim this round's reward now (the beat task does it every few minutes)."""
    from chain.reward import RewardService

    click.echo(RewardService(_client(ctx)).run_once())


@chain_group.command("bond")
@click.argument("amount", type=float)
@click.option("--to", "to", default=None, help="Orchestrator to bond to (default: yourself).")
@click.pass_context
def bond_cmd(ctx: click.Context, amount: float, to: str | None) -> None:
    """Approve and bond AMOUNT LPT."""
    wei = int(amount * LPT)
    client = _client(ctx)
    target = to or _me(client)
    token = client.contract("LivepeerToken")
    _send(ctx, "approve", lambda c: token.functions.approve(c.bonding.address, wei))
    _send(ctx, "bond", lambda c: c.bonding.functions.bond(wei, target), gas=1_000_000)


@chain_group.command("unbond")
@click.argument("amount", type=float)
@click.pass_context
def unbond_cmd(ctx: click.Context, amount: float) -> None:
    """Unbond AMOUNT LPT (an unbonding lock starts)."""
    wei = int(amount * LPT)
    _send(ctx, "unbond", lambda c: c.bonding.functions.unbond(wei), gas=1_000_000)


@chain_group.command("rebond")
@click.argument("lock_id", type=int)
@click.pass_context
def rebond_cmd(ctx: click.Context, lock_id: int) -> None:
    """Rebond an unbonding lock."""
    _send(ctx, "rebond", lambda c: c.bonding.functions.rebond(lock_id), gas=1_000_000)


@chain_group.command("withdraw-stake")
@click.argument("lock_id", type=int)
@click.pass_context
def withdraw_stake_cmd(ctx: click.Context, lock_id: int) -> None:
    """Withdraw an unbonded lock's LPT."""
    _send(ctx, "withdrawStake", lambda c: c.bonding.functions.withdrawStake(lock_id), gas=1_000_000)


@chain_group.command("withdraw-fees")
@click.option("--amount", type=float, default=None, help="ETH (default: all pending fees).")
@click.pass_context
def withdraw_fees_cmd(ctx: click.Context, amount: float | None) -> None:
    """Withdraw earned fees to your account."""
    client = _client(ctx)
    me = _me(client)
    wei = int(amount * ETH) if amount is not None else client.fees(client.address)
    _send(ctx, "withdrawFees", lambda c: c.bonding.functions.withdrawFees(me, wei), gas=1_000_000)


@chain_group.command("config")
@click.option("--reward-cut", type=float, required=True, help="Percent of rewards you keep.")
@click.option("--fee-share", type=float, required=True, help="Percent of fees to delegators.")
@click.pass_context
def config_cmd(ctx: click.Context, reward_cut: float, fee_share: float) -> None:
    """Set the orchestrator's reward cut and fee share (BondingManager.transcoder)."""
    cut, share = round(reward_cut * 1e4), round(fee_share * 1e4)
    _send(ctx, "transcoder", lambda c: c.bonding.functions.transcoder(cut, share), gas=1_000_000)


@chain_group.command("deposit")
@click.argument("deposit", type=float)
@click.argument("reserve", type=float, default=0.0)
@click.pass_context
def deposit_cmd(ctx: click.Context, deposit: float, reserve: float) -> None:
    """Fund DEPOSIT (and RESERVE) ETH for paying with tickets."""
    d, r = int(deposit * ETH), int(reserve * ETH)
    _send(
        ctx,
        "fundDepositAndReserve",
        lambda c: c.broker.functions.fundDepositAndReserve(d, r),
        value=d + r,
    )


@chain_group.command("unlock")
@click.pass_context
def unlock_cmd(ctx: click.Context) -> None:
    """Start unlocking the deposit and reserve."""
    _send(ctx, "unlock", lambda c: c.broker.functions.unlock())


@chain_group.command("withdraw")
@click.pass_context
def withdraw_cmd(ctx: click.Context) -> None:
    """Withdraw an unlocked deposit and reserve."""
    _send(ctx, "withdraw", lambda c: c.broker.functions.withdraw())


@chain_group.command("tickets")
def tickets_cmd() -> None:
    """Winning tickets waiting for redemption."""
    from sqlalchemy import create_engine

    from chain.queue import TicketQueue
    from farm.cli.cluster import _load

    settings: ClusterSettings = _load(ClusterSettings)
    queue = TicketQueue(create_engine(settings.ticket_queue_url or settings.database_url))
    queue.create_schema()
    for q in queue.pending():
        click.echo(
            json.dumps(
                {
                    "hash": "0x" + q.ticket.hash().hex(),
                    "sender": "0x" + q.ticket.sender.hex(),
                    "face_value": q.ticket.face_value,
                    "expiration_block": q.expiration_block,
                    "attempts": q.attempts,
                    "last_error": q.last_error,
                }
            )
        )
