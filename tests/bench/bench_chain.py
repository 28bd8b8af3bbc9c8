"""python -m tests.bench.bench_chain: gas per winning ticket, batched vs one transaction each.

go-livepeer sends one ``redeemWinningTicket`` transaction per ticket; the farm's Redeemer sends
``batchRedeemWinningTickets``. On a bootstrapped anvil (development contracts), after one
warm-up redemption, each measurement starts from the same snapshot: N tickets redeemed one
transaction each, and batches of 1, 5, 10 and 20 through ``Redeemer.run_once`` from a SQLite
queue. The figure is gasUsed per ticket, transaction base cost included; the target is a
batch of 10 at no more than 80 % of the single-ticket figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import sqlalchemy as sa

from chain.abi import ticket_tuple
from chain.client import ChainClient
from chain.devchain import DevChain, bootstrap, mine, revert, snapshot, start_anvil
from chain.queue import TicketQueue
from chain.redeem import Redeemer
from chain.signing import Signer, keccak256
from chain.tickets import MAX_WIN_PROB, Ticket, address, recipient_rand_hash

TARGET = 0.80
FACE_VALUE = 10**15
BATCHES = (1, 5, 10, 20)


class Bench:
    """Tickets from the bootstrapped broadcaster to the orchestrator, redeemed and metered."""

    def __init__(self, chain: DevChain, workdir: Path) -> None:
        self.chain = chain
        self.client = ChainClient.from_devchain(chain)
        self.signer = Signer(bytes.fromhex(chain.broadcaster.private_key.removeprefix("0x")))
        self.workdir = workdir
        self.nonce = 0

    def ticket(self) -> tuple[Ticket, bytes, int]:
        self.nonce += 1
        round_ = self.client.current_round()
        rand = int.from_bytes(keccak256(b"bench" + self.nonce.to_bytes(8, "big")), "big")
        ticket = Ticket(
            recipient=address(self.chain.orchestrator.address),
            sender=self.signer.address,
            face_value=FACE_VALUE,
            win_prob=MAX_WIN_PROB,
            sender_nonce=self.nonce,
            recipient_rand_hash=recipient_rand_hash(rand),
            creation_round=round_,
            creation_round_block_hash=self.client.block_hash_for_round(round_),
        )
        return ticket, self.signer.sign_hash(ticket.hash()), rand

    def single(self, count: int) -> float:
        """Gas per ticket, one redeemWinningTicket transaction each."""
        total = 0
        for _ in range(count):
            ticket, sig, rand = self.ticket()
            fn = self.client.broker.functions.redeemWinningTicket(ticket_tuple(ticket), sig, rand)
            total += int(self.client.transact(fn)["gasUsed"])
        return total / count

    def batch(self, size: int) -> float:
        """Gas per ticket, ``size`` tickets in one Redeemer.run_once."""
        engine = sa.create_engine(f"sqlite:///{self.workdir}/bench-{size}-{self.nonce}.db")
        queue = TicketQueue(engine)
        queue.create_schema()
        block = self.client.last_seen_l1_block()
        for _ in range(size):
            ticket, sig, rand = self.ticket()
            queue.add(ticket, sig, rand, block)
        report = Redeemer(self.client, queue, batch_size=size).run_once()
        engine.dispose()
        if len(report.redeemed) != size:
            raise RuntimeError(f"batch of {size}: {report}")
        return report.gas_used / size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=10, help="single-ticket transactions")
    args = parser.parse_args(argv)
    with start_anvil() as anvil, tempfile.TemporaryDirectory() as tmp:
        w3 = anvil.web3()
        chain = bootstrap(w3)
        bench = Bench(chain, Path(tmp))
        bench.single(1)  # warm-up: the fee pool and the sender's slots are written once
        mine(w3, 1)
        base = snapshot(w3)

        def measure(fn: Callable[[int], float], arg: int) -> float:
            nonlocal base
            bench.client = ChainClient.from_devchain(chain)  # nonces restart with the chain
            value = fn(arg)
            revert(w3, base)
            base = snapshot(w3)
            return value

        single = measure(bench.single, args.singles)
        print(f"one tx per ticket ({args.singles} tx): {single:10.0f} gas/ticket")
        per_ticket: dict[int, float] = {}
        for size in BATCHES:
            per_ticket[size] = measure(bench.batch, size)
            ratio = Fraction(round(per_ticket[size]), round(single))
            print(
                f"batch of {size:2d}:{'':20s}{per_ticket[size]:10.0f} gas/ticket"
                f"  ({float(ratio):6.1%} of single)"
            )
        ratio10 = per_ticket[10] / single
        verdict = "PASS" if ratio10 <= TARGET else "FAIL"
        print(f"batch 10 / single: {ratio10:.1%} (target <= {TARGET:.0%}): {verdict}")
        return 0 if ratio10 <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
