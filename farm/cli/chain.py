"""``farm chain``: livepeer_cli's role — status, rounds, staking, fees, deposits, tickets.

Every command reads ``FARM_ETH_RPC_URL`` / ``FARM_ETH_CONTROLLER`` / ``FARM_ETH_PRIVATE_KEY``
(or ``--devchain FILE`` written by ``farm chain dev``) and prints one readable block or line.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import click

from farm.errors import ConfigError, FarmError
from farm.settings import ClusterSettings

__all__ = ["chain_group"]

LPT = 10**18
ETH = 10**18
#: A number, then optionally a unit: "1.5", "1.5LPT", "2 eth", "1e-3 ETH", "100 wei".
_AMOUNT: Final = re.compile(r"\s*([-+]?[0-9.]+(?:e[-+]?[0-9]+)?)\s*([a-z]*)\s*", re.IGNORECASE)
#: Above this many digits an amount cannot fit a uint256 in any unit (and Fraction would choke).
_MAX_DIGITS: Final = 80


def parse_amount(text: str, unit: str) -> int:
    """``text`` in wei: a plain number is in ``unit`` (LPT or ETH, 18 decimals); a suffix may
    name ``unit``, ``gwei`` (ETH only) or ``wei``. Exact, no float rounding.

    Raises ValueError for anything else, a negative amount or a fraction of a wei.
    """
    units = {unit.lower(): 10**18, "wei": 1, **({"gwei": 10**9} if unit == "ETH" else {})}
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an amount of {unit} (e.g. 1.5 or 1.5{unit})")
    number_text, suffix = match.groups()
    try:
        number = Decimal(number_text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount of {unit} (e.g. 1.5 or 1.5{unit})") from None
    factor = units.get(suffix.lower() or unit.lower())
    if factor is None:
        others = " or ".join(sorted(set(units) - {unit.lower()}))
        raise ValueError(f"{text!r}: give {unit} (or {others}), not {suffix}")
    if number < 0:
        raise ValueError(f"{text!r} is negative")
    if number.adjusted() > _MAX_DIGITS:
        raise ValueError(f"{text!r} is too large")
    wei = Fraction(number) * factor
    if wei.denominator != 1:
        raise ValueError(f"{text!r} is not a whole number of wei (at most 18 decimals for {unit})")
    return int(wei)


class TokenAmount(click.ParamType[int]):
    """A command-line amount of LPT or ETH, as wei (see :func:`parse_amount`)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.name = f"{unit} amount"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value  # a default, already in wei
        try:
            return parse_amount(str(value), self.unit)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _client(ctx: click.Context) -> Any:
    from chain.client import ChainClient
    from chain.errors import ChainError

    devchain: Path | None = ctx.obj.get("devchain")
    if devchain is not None:
        try:
            return ChainClient.from_devchain(devchain, role=ctx.obj.get("role", "orchestrator"))
        except ChainError as e:
            raise click.ClickException(str(e)) from e
    from farm.chainconf import chain_client
    from farm.cli.cluster import _load

    settings: ClusterSettings = _load(ClusterSettings)
    try:
        client = chain_client(settings.chain(), signing=False)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    if client is None:
        raise click.ClickException(
            "no chain configured: set FARM_ETH_RPC_URL and FARM_ETH_CONTROLLER (and "
            "FARM_ETH_PRIVATE_KEY to send transactions), or pass --devchain FILE"
        )
    return client


def _staking(ctx: click.Context) -> Any:
    from chain.staking import Staking

    return Staking(_client(ctx))


def _run(what: str, op: Any) -> Any:
    """Run one staking operation; a chain error becomes a one-line failure (exit 1)."""
    from chain.errors import ChainError

    try:
        return op()
    except ChainError as e:
        raise click.ClickException(f"{what} failed: {e}") from e


def _echo_txs(result: Any) -> None:
    for tx in result if isinstance(result, list) else [result]:
        click.echo(str(tx))


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
@click.option(
    "--service-uri",
    default="https://127.0.0.1:8935",
    show_default=True,
    help="What the orchestrator advertises in the ServiceRegistry (https://HOST:PORT).",
)
def dev_cmd(out: Path, service_uri: str) -> None:
    """Start anvil, deploy the contracts, bootstrap an orchestrator and a funded sender."""
    import signal

    from chain.devchain import main

    def _interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (systemd, docker stop, kill) stops anvil as Ctrl-C does, instead of leaving it.
    signal.signal(signal.SIGTERM, _interrupted)
    raise SystemExit(main([str(out), "--service-uri", service_uri]))


def _decimal(wei: int, decimals: int = 18) -> str:
    """``wei`` in whole units of 10**decimals wei, exactly: 1000020 * 10**18 -> '1000020'."""
    sign = "-" if wei < 0 else ""
    whole, fraction = divmod(abs(wei), 10**decimals)
    digits = f"{fraction:0{decimals}d}".rstrip("0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def _fmt_status(status: dict[str, Any]) -> dict[str, str]:
    lines = {
        "round": f"{status['round']} "
        f"({'initialized' if status['initialized'] else 'not initialized'})",
        "block": str(status["block"]),
        "gas price": f"{_decimal(status['gas_price_wei'], 9)} gwei",
    }
    if "account" in status:
        lines.update(
            {
                "account": status["account"],
                "bonded": f"{_decimal(status['bonded_wei'])} LPT to {status['delegate']}",
                "orchestrator": "active" if status["active"] else "not active",
                "reward cut / fee share": f"{status['reward_cut_percent']:g} % / "
                f"{status['fee_share_percent']:g} %",
                "last reward round": str(status["last_reward_round"]),
                "pending fees": f"{_decimal(status['pending_fees_wei'])} ETH",
                "deposit / reserve": f"{_decimal(status['deposit_wei'])} / "
                f"{_decimal(status['reserve_wei'])} ETH",
            }
        )
    return lines


@chain_group.command("status")
@click.pass_context
def status_cmd(ctx: click.Context) -> None:
    """Round, the account's stake, reward, fees, deposit and reserve."""
    staking = _staking(ctx)
    status = _run("status", staking.status)
    lines = _fmt_status(status)
    lines.update(_fmt_service_uri(status))
    width = max(map(len, lines))
    for k, v in lines.items():
        click.echo(f"{k:<{width}}  {v}")


def _fmt_service_uri(status: dict[str, Any]) -> dict[str, str]:
    """The status line of the advertised service URI (none without an account)."""
    if "service_uri" not in status:
        return {}
    uri = status["service_uri"]
    if uri is None:
        return {"service URI": "(no ServiceRegistry on this chain)"}
    return {"service URI": uri or "(not set: farm chain set-service-uri https://HOST:PORT)"}


@chain_group.command("set-service-uri")
@click.argument("url")
@click.pass_context
def set_service_uri_cmd(ctx: click.Context, url: str) -> None:
    """Advertise URL (https://HOST:PORT) in the ServiceRegistry, where gateways find you."""
    from chain.service_uri import parse

    try:
        parse(url)  # before connecting: a bad URL is refused with nothing sent
    except ValueError as e:
        raise click.ClickException(f"setServiceURI refused: {e}") from None
    staking = _staking(ctx)
    _echo_txs(_run("setServiceURI", lambda: staking.set_service_uri(url)))


@chain_group.command("round")
@click.option("--initialize", is_flag=True, help="Initialize the current round.")
@click.pass_context
def round_cmd(ctx: click.Context, initialize: bool) -> None:
    """Show the current round, or initialize it."""
    staking = _staking(ctx)
    if initialize:
        _echo_txs(_run("initializeRound", staking.initialize_round))
        return
    click.echo(json.dumps(_run("round", staking.round)))


@chain_group.command("reward")
@click.pass_context
def reward_cmd(ctx: click.Context) -> None:
    """Claim this round's reward now (the beat task does it every few minutes)."""
    click.echo(_run("reward", _staking(ctx).reward))


@chain_group.command("bond")
@click.argument("amount", type=TokenAmount("LPT"))
@click.option("--to", "to", default=None, help="Orchestrator to bond to (default: yourself).")
@click.pass_context
def bond_cmd(ctx: click.Context, amount: int, to: str | None) -> None:
    """Approve and bond AMOUNT LPT."""
    staking = _staking(ctx)
    _echo_txs(_run("bond", lambda: staking.bond(amount, to)))


@chain_group.command("unbond")
@click.argument("amount", type=TokenAmount("LPT"))
@click.pass_context
def unbond_cmd(ctx: click.Context, amount: int) -> None:
    """Unbond AMOUNT LPT (an unbonding lock starts)."""
    staking = _staking(ctx)
    _echo_txs(_run("unbond", lambda: staking.unbond(amount)))


@chain_group.command("rebond")
@click.argument("lock_id", type=int)
@click.pass_context
def rebond_cmd(ctx: click.Context, lock_id: int) -> None:
    """Rebond an unbonding lock."""
    staking = _staking(ctx)
    _echo_txs(_run("rebond", lambda: staking.rebond(lock_id)))


@chain_group.command("withdraw-stake")
@click.argument("lock_id", type=int)
@click.pass_context
def withdraw_stake_cmd(ctx: click.Context, lock_id: int) -> None:
    """Withdraw an unbonded lock's LPT."""
    staking = _staking(ctx)
    _echo_txs(_run("withdrawStake", lambda: staking.withdraw_stake(lock_id)))


@chain_group.command("withdraw-fees")
@click.option(
    "--amount", type=TokenAmount("ETH"), default=None, help="ETH (default: all pending fees)."
)
@click.pass_context
def withdraw_fees_cmd(ctx: click.Context, amount: int | None) -> None:
    """Withdraw earned fees to your account."""
    staking = _staking(ctx)
    _echo_txs(_run("withdrawFees", lambda: staking.withdraw_fees(amount)))


@chain_group.command("config")
@click.option("--reward-cut", type=float, default=None, help="Percent of rewards you keep.")
@click.option("--fee-share", type=float, default=None, help="Percent of fees to delegators.")
@click.option("--price-per-unit", type=int, default=None, help="Wei per --pixels-per-unit pixels.")
@click.option("--pixels-per-unit", type=int, default=1, show_default=True)
@click.option(
    "--node-url",
    envvar="FARM_NODE_URL",
    default=None,
    help="The orchestrator node that quotes the price to gateways (env FARM_NODE_URL).",
)
@click.option("--node-ca", envvar="FARM_NODE_CA", default=None, help="CA file for an https node.")
@click.option(
    "--node-cert-fingerprint",
    envvar="FARM_NODE_CERT_FINGERPRINT",
    default=None,
    help="SHA-256 fingerprint of an https node's certificate.",
)
@click.option(
    "--gateway-url",
    default=None,
    help="The gateway that quotes the price to its ticket payers (default, without "
    "--node-url: FARM_GATEWAY_HOST/PORT).",
)
@click.pass_context
def config_cmd(
    ctx: click.Context,
    reward_cut: float | None,
    fee_share: float | None,
    price_per_unit: int | None,
    pixels_per_unit: int,
    node_url: str | None,
    node_ca: str | None,
    node_cert_fingerprint: str | None,
    gateway_url: str | None,
) -> None:
    """Set the reward cut and fee share (on chain) and the price: on the orchestrator node
    (quoted in OrchestratorInfo) and/or on the gateway (quoted in its ticket params)."""
    if (reward_cut is None) != (fee_share is None):
        raise click.UsageError("--reward-cut and --fee-share go together")
    if reward_cut is None and price_per_unit is None:
        raise click.UsageError("give --reward-cut/--fee-share, --price-per-unit, or both")
    if reward_cut is not None and fee_share is not None:
        staking = _staking(ctx)
        _echo_txs(_run("transcoder", lambda: staking.config(reward_cut, fee_share)))
    if price_per_unit is None:
        return
    if node_url:
        price = _set_node_price(
            node_url, node_ca, node_cert_fingerprint, price_per_unit, pixels_per_unit
        )
        click.echo(
            f"node price: {price['price_per_unit']} wei per {price['pixels_per_unit']} pixel(s)"
        )
    if gateway_url or not node_url:
        price = _set_gateway_price(gateway_url, price_per_unit, pixels_per_unit)
        click.echo(f"price: {price['price_per_unit']} wei per {price['pixels_per_unit']} pixel(s)")


def _set_node_price(
    url: str, ca: str | None, pin: str | None, price_per_unit: int, pixels_per_unit: int
) -> Any:
    """PUT the price to the node, which quotes it in OrchestratorInfo from now on."""
    import httpx

    from farm.cli.cluster import _load
    from farm.remote.tls import NodeHttp
    from farm.settings import NodeSettings

    settings: NodeSettings = _load(NodeSettings)
    node = NodeHttp(url, ca, pin, timeout_s=10)
    try:
        r = node.client().put(
            f"{url.rstrip('/')}/orchestrator/price",
            json={"price_per_unit": price_per_unit, "pixels_per_unit": pixels_per_unit},
            headers={"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"},
        )
    except (httpx.HTTPError, FarmError) as e:
        raise click.ClickException(f"setting the price failed: node {url}: {e}") from e
    finally:
        node.close()
    if r.status_code != 200:
        raise click.ClickException(f"setting the price failed: {r.status_code} {r.text}")
    return r.json()


def _set_gateway_price(url: str | None, price_per_unit: int, pixels_per_unit: int) -> Any:
    """PUT the price to the gateway's admin API, which quotes it in new ticket params."""
    import httpx

    from farm.cli.cluster import _load
    from gateway.settings import GatewaySettings

    settings: GatewaySettings = _load(GatewaySettings)
    base = url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    try:
        r = httpx.put(
            f"{base.rstrip('/')}/admin/price",
            json={"price_per_unit": price_per_unit, "pixels_per_unit": pixels_per_unit},
            headers={"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"},
            timeout=10,
        )
    except httpx.HTTPError as e:
        raise click.ClickException(f"setting the price failed: gateway {base}: {e}") from e
    if r.status_code != 200:
        raise click.ClickException(f"setting the price failed: {r.status_code} {r.text}")
    return r.json()


@chain_group.command("deposit")
@click.argument("deposit", type=TokenAmount("ETH"))
@click.argument("reserve", type=TokenAmount("ETH"), default=0)
@click.pass_context
def deposit_cmd(ctx: click.Context, deposit: int, reserve: int) -> None:
    """Fund DEPOSIT (and RESERVE) ETH for paying with tickets."""
    staking = _staking(ctx)
    _echo_txs(_run("fundDepositAndReserve", lambda: staking.deposit(deposit, reserve)))


@chain_group.command("reserve")
@click.argument("amount", type=TokenAmount("ETH"))
@click.pass_context
def reserve_cmd(ctx: click.Context, amount: int) -> None:
    """Add AMOUNT ETH to the reserve that backs tickets beyond the deposit."""
    staking = _staking(ctx)
    _echo_txs(_run("fundReserve", lambda: staking.reserve(amount)))


@chain_group.command("unlock")
@click.pass_context
def unlock_cmd(ctx: click.Context) -> None:
    """Start unlocking the deposit and reserve."""
    _echo_txs(_run("unlock", _staking(ctx).unlock))


@chain_group.command("withdraw")
@click.pass_context
def withdraw_cmd(ctx: click.Context) -> None:
    """Withdraw an unlocked deposit and reserve."""
    _echo_txs(_run("withdraw", _staking(ctx).withdraw))


@chain_group.command("tickets")
def tickets_cmd() -> None:
    """Winning tickets waiting for redemption."""
    from sqlalchemy import create_engine

    from chain.queue import TicketQueue
    from farm.cli.cluster import _load

    settings: ClusterSettings = _load(ClusterSettings)
    queue = TicketQueue(create_engine(settings.ticket_queue_database()))
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
