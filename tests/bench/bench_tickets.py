"""make bench-tickets: ticket validations per second on one core.

A validation is what every received ticket costs in CPU: the ticket hash, signer recovery
over the eth_sign digest and the win check. It is timed with coincurve (libsecp256k1) and
with eth_keys' pure-Python backend (what eth_account falls back to without coincurve), plus
eth_account's own ``recover_message`` as it runs here, and a whole ``receive_ticket`` (rand
HMAC, checks, in-memory nonces), with what each of its checks costs. The ratio printed last
is coincurve / pure Python.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from fractions import Fraction

from eth_account import Account
from eth_account.messages import encode_defunct

from chain.params import RecipientConfig, TicketParamsIssuer
from chain.signing import HAS_COINCURVE, Signer, recover_coincurve, recover_eth_keys
from chain.tickets import Ticket
from chain.validation import MemoryNonceStore, StaticChainView, TicketReceiver

TARGET = 5000
#: receive_ticket with every check, per core.
RECEIVE_TARGET = 8000
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
RECIPIENT = bytes.fromhex("73aed7b5deb30222fa896f399d46cc99c7bee57f")
BLOCK_HASH = bytes(range(32))
PRICE = Fraction(1200)


def eth_account_recover(message_hash: bytes, sig: bytes) -> bytes:
    address = Account.recover_message(encode_defunct(primitive=message_hash), signature=sig)
    return bytes.fromhex(address[2:])


def rate(
    tickets: list[tuple[Ticket, bytes]], rand: int, recover: Callable[[bytes, bytes], bytes]
) -> float:
    """Validations per second over ``tickets``, one core."""
    start = time.perf_counter()
    for ticket, sig in tickets:
        if recover(ticket.hash(), sig) != ticket.sender:
            raise AssertionError("recovered the wrong signer")
        ticket.is_winning(sig, rand)
    return len(tickets) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=20000, help="tickets for the fast paths")
    parser.add_argument("--slow-tickets", type=int, default=300, help="for pure Python")
    args = parser.parse_args()

    signer = Signer(KEY)
    issuer = TicketParamsIssuer(RECIPIENT, RecipientConfig(ev=10**9))
    params = issuer.ticket_params(
        signer.address,
        PRICE,
        gas_price=10**8,
        max_float=10**18,
        last_seen_l1_block=1000,
        creation_round=3000,
        creation_round_block_hash=BLOCK_HASH,
    )
    tickets = []
    for nonce in range(1, args.tickets + 1):
        ticket = params.ticket(signer.address, nonce)
        tickets.append((ticket, signer.sign_hash(ticket.hash())))
    rand = 0x5EED

    results: list[tuple[str, float]] = []
    if HAS_COINCURVE:
        results.append(("coincurve", rate(tickets, rand, recover_coincurve)))
    results.append(("eth_account.recover_message", rate(tickets[:2000], rand, eth_account_recover)))
    results.append(
        ("eth_keys pure Python", rate(tickets[: args.slow_tickets], rand, recover_eth_keys))
    )

    receiver = TicketReceiver(
        issuer, StaticChainView(round=3000, l1_block=1000), MemoryNonceStore(max_nonces=10**9)
    )
    start = time.perf_counter()
    for ticket, sig in tickets:
        receiver.receive_ticket(
            ticket,
            sig,
            seed=params.seed,
            expiration_block=params.expiration_block,
            price_per_pixel=PRICE,
        )
    results.append(("receive_ticket (all checks)", len(tickets) / (time.perf_counter() - start)))

    costs = _check_costs(issuer, receiver, params, tickets[:5000], rand)

    print(f"{'path':<30} {'validations/s/core':>20}")
    for name, value in results:
        print(f"{name:<30} {value:>20,.0f}")
    fast = results[0][1]
    slow = dict(results)["eth_keys pure Python"]
    print(f"ratio coincurve / pure Python: {fast / slow:.1f}x")
    verdict = "meets" if fast >= TARGET else "MISSES"
    print(f"{results[0][0]}: {fast:,.0f}/s {verdict} the {TARGET:,}/s/core target")
    print(f"{'receive_ticket check':<30} {'us per ticket':>20}")
    for name, us in costs:
        print(f"{name:<30} {us:>20.2f}")
    full = dict(results)["receive_ticket (all checks)"]
    verdict = "meets" if full >= RECEIVE_TARGET else "MISSES"
    print(f"receive_ticket: {full:,.0f}/s {verdict} the {RECEIVE_TARGET:,}/s/core target")


def _check_costs(
    issuer: TicketParamsIssuer,
    receiver: TicketReceiver,
    params: object,
    tickets: list[tuple[Ticket, bytes]],
    rand: int,
) -> list[tuple[str, float]]:
    """Microseconds per ticket of each step receive_ticket takes, timed alone."""
    from chain.tickets import recipient_rand_hash

    p = params
    steps: list[tuple[str, Callable[[Ticket, bytes], object]]] = [
        (
            "recipient rand (HMAC)",
            lambda t, s: issuer.recipient_rand(
                p.seed,  # type: ignore[attr-defined]
                t.sender,
                t.face_value,
                t.win_prob,
                p.expiration_block,  # type: ignore[attr-defined]
                PRICE,
                t.aux_data,
            ),
        ),
        ("sender funds (chain view)", lambda t, s: receiver.chain.withdraw_round(t.sender)),
        ("rand hash (keccak)", lambda t, s: recipient_rand_hash(rand)),
        ("ticket hash (keccak)", lambda t, s: t.hash()),
        ("signature (recover)", lambda t, s: recover_coincurve(t.hash(), s)),
        ("win check (keccak)", lambda t, s: t.is_winning(s, rand)),
        ("expected value", lambda t, s: t.expected_value()),
    ]
    out = []
    for name, step in steps:
        start = time.perf_counter()
        for ticket, sig in tickets:
            step(ticket, sig)
        out.append((name, (time.perf_counter() - start) / len(tickets) * 1e6))
    nonces = MemoryNonceStore(max_nonces=10**9)
    start = time.perf_counter()
    for ticket, _ in tickets:
        nonces.add(ticket.recipient_rand_hash, ticket.sender_nonce)
    out.append(("nonce replay (memory)", (time.perf_counter() - start) / len(tickets) * 1e6))
    return out


if __name__ == "__main__":
    main()
