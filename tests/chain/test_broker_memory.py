"""The redeemer's promises against MemoryBroker, TicketBroker's rules in memory (no node).

The same Redeemer runs against anvil in test_redeem.py; here the chain's state is set up in a
line, so the redeemer's logic is held to every case: one batch per run, a ticket paid once, a
replay refused, a sender whose funds run out, one ticket's failure inside a batch leaving the
others paid. The last tests check that ChainClient and MemoryBroker are both Brokers.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from mypy import api as mypy_api

from chain.broker import Broker, ChainView
from chain.client import ChainClient
from chain.errors import ContractReverted, SenderUnlocking
from chain.memory_broker import MemoryBroker
from chain.params import (
    PARAMS_EXPIRY_BLOCKS,
    RecipientConfig,
    TicketParamsIssuer,
    issue_params,
)
from chain.queue import TicketQueue
from chain.redeem import Redeemer
from chain.signing import Signer
from chain.tickets import MAX_WIN_PROB, SignedTicket, Ticket, recipient_rand_hash
from chain.validation import MemoryNonceStore, TicketReceiver
from tests.chain.conftest import PRICE, RECIPIENT, SENDER_KEY

pytestmark = pytest.mark.timeout(120)

FACE_VALUE = 10**15
SENDER = Signer(SENDER_KEY).address
OTHER_RECIPIENT = bytes.fromhex("b0" * 20)
OTHER_ACCOUNT = bytes.fromhex("c0" * 20)


@pytest.fixture
def broker() -> MemoryBroker:
    """A chain where SENDER has a deposit for 10 tickets and RECIPIENT, the redeemer's
    account, is the one transcoder."""
    chain = MemoryBroker(address=RECIPIENT)
    chain.register_transcoder(RECIPIENT)
    chain.fund_deposit_and_reserve(SENDER, 10 * FACE_VALUE)
    return chain


@pytest.fixture
def queue(sqlite_url: str) -> Iterator[TicketQueue]:
    engine = sa.create_engine(sqlite_url)
    q = TicketQueue(engine)
    q.create_schema()
    yield q
    engine.dispose()


def winning(
    broker: MemoryBroker,
    count: int,
    *,
    face_value: int = FACE_VALUE,
    first_nonce: int = 1,
    recipient: bytes = RECIPIENT,
) -> list[SignedTicket]:
    """``count`` tickets of SENDER that win, made in the last initialized round."""
    round_ = broker.last_initialized_round()
    out = []
    for nonce in range(first_nonce, first_nonce + count):
        rand = 7 * 10**30 + nonce
        ticket = Ticket(
            recipient=recipient,
            sender=SENDER,
            face_value=face_value,
            win_prob=MAX_WIN_PROB,
            sender_nonce=nonce,
            recipient_rand_hash=recipient_rand_hash(rand),
            creation_round=round_,
            creation_round_block_hash=broker.block_hash_for_round(round_),
        )
        out.append(SignedTicket(ticket, Signer(SENDER_KEY).sign_hash(ticket.hash()), rand))
    return out


def enqueue(broker: MemoryBroker, queue: TicketQueue, tickets: list[SignedTicket]) -> list[bytes]:
    """Queue the tickets as a receiver does (params expiring as issued now); their hashes."""
    expiration = broker.last_seen_l1_block() + PARAMS_EXPIRY_BLOCKS
    for t in tickets:
        assert queue.add(t.ticket, t.sig, t.recipient_rand, expiration)
    return [t.hash() for t in tickets]


def due(broker: MemoryBroker) -> None:
    """Mine past every queued ticket's params expiration."""
    broker.mine(PARAMS_EXPIRY_BLOCKS + 1)


# ---- batching --------------------------------------------------------------------------


def test_due_tickets_go_in_one_batch_and_are_paid_once(
    broker: MemoryBroker, queue: TicketQueue
) -> None:
    hashes = enqueue(broker, queue, winning(broker, 5))
    redeemer = Redeemer(broker, queue)
    # Params not expired yet: nothing is due, nothing is sent.
    report = redeemer.run_once()
    assert report.tx_hash is None and len(queue.pending()) == 5

    due(broker)
    report = redeemer.run_once()
    assert report.skipped is None and report.tx_hash is not None
    assert sorted(report.redeemed) == sorted(hashes)
    assert report.retried == {} and report.given_up == {} and report.waiting == {}
    assert report.face_value_redeemed == 5 * FACE_VALUE
    assert 0 < report.gas_used < report.gas_limit
    assert broker.fees(RECIPIENT) == 5 * FACE_VALUE
    assert broker.sender_info(SENDER).deposit == 5 * FACE_VALUE
    assert all(broker.used(h) for h in hashes) and queue.pending() == []
    assert queue.counts() == {"redeemed": 5}
    # Paid once: nothing is left to send.
    assert redeemer.run_once().tx_hash is None
    assert broker.fees(RECIPIENT) == 5 * FACE_VALUE


def test_batches_hold_at_most_batch_size_tickets(broker: MemoryBroker, queue: TicketQueue) -> None:
    hashes = enqueue(broker, queue, winning(broker, 5))
    due(broker)
    redeemer = Redeemer(broker, queue, batch_size=2)
    runs = [redeemer.run_once() for _ in range(3)]
    assert [len(r.redeemed) for r in runs] == [2, 2, 1]
    assert sorted(h for r in runs for h in r.redeemed) == sorted(hashes)
    assert len({r.tx_hash for r in runs}) == 3


def test_a_single_due_ticket_is_sent_alone_with_its_estimate(
    broker: MemoryBroker, queue: TicketQueue
) -> None:
    (signed,) = winning(broker, 1)
    enqueue(broker, queue, [signed])
    due(broker)
    redeemer = Redeemer(broker, queue)
    estimate = broker.estimate_redeem(signed)
    report = redeemer.run_once()
    assert report.redeemed == [signed.hash()]
    assert report.gas_limit == redeemer.ticket_gas(estimate) and report.gas_used == estimate


# ---- replays -----------------------------------------------------------------------------


def test_a_replayed_ticket_is_refused(
    broker: MemoryBroker, queue: TicketQueue, tmp_path: Path
) -> None:
    tickets = winning(broker, 2)
    enqueue(broker, queue, tickets)
    assert not queue.add(tickets[0].ticket, tickets[0].sig, tickets[0].recipient_rand, 0)
    due(broker)
    first = Redeemer(broker, queue).run_once()
    assert len(first.redeemed) == 2
    # The same tickets queued again elsewhere (a second door that kept them): the contract
    # refuses them as used, and our own earlier transaction is found, so they count as
    # redeemed there, with that transaction, and nothing is paid twice.
    other = TicketQueue(sa.create_engine(f"sqlite:///{tmp_path}/other.db"))
    other.create_schema()
    enqueue(broker, other, tickets)
    due(broker)
    again = Redeemer(broker, other).run_once()
    assert again.tx_hash is None and sorted(again.redeemed) == sorted(first.redeemed)
    assert broker.fees(RECIPIENT) == 2 * FACE_VALUE
    with pytest.raises(ContractReverted, match="ticket is used"):
        broker.estimate_redeem(tickets[0])


def test_a_ticket_another_account_redeemed_is_given_up(
    broker: MemoryBroker, queue: TicketQueue
) -> None:
    tickets = winning(broker, 3)
    hashes = enqueue(broker, queue, tickets)
    # Anyone may submit a ticket: another account redeems the second one first.
    outsider = broker.account(OTHER_ACCOUNT)
    assert outsider.redeem_winning_ticket(tickets[1], gas=1_000_000).redeemed == {hashes[1]}
    due(broker)
    report = Redeemer(broker, queue).run_once()
    assert sorted(report.redeemed) == sorted([hashes[0], hashes[2]])
    assert list(report.given_up) == [hashes[1]]
    assert "redeemed by another sender" in report.given_up[hashes[1]]
    assert queue.counts() == {"redeemed": 2, "failed": 1}
    assert broker.fees(RECIPIENT) == 3 * FACE_VALUE  # the outsider's redemption paid us too


# ---- funds -------------------------------------------------------------------------------


def test_a_sender_whose_deposit_runs_out_keeps_the_rest_queued(
    broker: MemoryBroker, queue: TicketQueue
) -> None:
    poor = MemoryBroker(address=RECIPIENT)
    poor.register_transcoder(RECIPIENT)
    poor.fund_deposit_and_reserve(SENDER, 2 * FACE_VALUE)
    hashes = enqueue(poor, queue, winning(poor, 3))
    due(poor)
    redeemer = Redeemer(poor, queue)
    report = redeemer.run_once()
    assert sorted(report.redeemed) == sorted(hashes[:2])
    assert report.retried == {hashes[2]: "insufficient sender funds in this batch"}
    (left,) = queue.pending()
    assert left.ticket.hash() == hashes[2] and left.attempts == 1
    # Alone, the contract says the same, and the ticket is kept: the sender may pay later.
    report = redeemer.run_once()
    assert report.tx_hash is None and "insufficient" in report.retried[hashes[2]]
    assert queue.pending()[0].attempts == 2
    poor.fund_deposit_and_reserve(SENDER, FACE_VALUE)
    assert redeemer.run_once().redeemed == [hashes[2]]
    assert poor.fees(RECIPIENT) == 3 * FACE_VALUE


def test_a_ticket_the_batch_would_pay_from_the_reserve_waits_for_the_next_run(
    queue: TicketQueue,
) -> None:
    chain = MemoryBroker(address=RECIPIENT)
    chain.register_transcoder(RECIPIENT)
    chain.fund_deposit_and_reserve(SENDER, 3 * FACE_VALUE // 2, 2 * FACE_VALUE)
    first, second = enqueue(chain, queue, winning(chain, 2))
    due(chain)
    redeemer = Redeemer(chain, queue)
    report = redeemer.run_once()
    # Alone, each is paid from the deposit; after the first only half a face value is left,
    # so the second would draw on the reserve, which costs more gas than it was estimated at.
    assert report.redeemed == [first]
    assert list(report.waiting) == [second] and "reserve" in report.waiting[second]
    assert queue.pending()[0].attempts == 0
    again = redeemer.run_once()
    assert again.redeemed == [second]
    info = chain.sender_info(SENDER)
    assert info.deposit == 0 and info.reserve == 3 * FACE_VALUE // 2
    assert chain.fees(RECIPIENT) == 2 * FACE_VALUE


def test_an_unlocked_sender_keeps_its_tickets_queued(queue: TicketQueue) -> None:
    chain = MemoryBroker(address=RECIPIENT, unlock_period=1)
    chain.register_transcoder(RECIPIENT)
    chain.fund_deposit_and_reserve(SENDER, 10 * FACE_VALUE)
    (ticket,) = enqueue(chain, queue, winning(chain, 1))
    chain.unlock(SENDER)
    chain.next_round()  # the unlock completes: TicketBroker pays nothing
    report = Redeemer(chain, queue).run_once()
    assert report.retried == {ticket: "sender is unlocked"} and report.tx_hash is None
    # Funding again locks the sender: the ticket, still valid, is paid.
    chain.fund_deposit_and_reserve(SENDER, FACE_VALUE)
    assert Redeemer(chain, queue).run_once().redeemed == [ticket]


def test_face_value_below_its_share_of_the_tx_cost_is_dropped(
    broker: MemoryBroker, queue: TicketQueue
) -> None:
    good = enqueue(broker, queue, winning(broker, 2))
    (cheap,) = enqueue(broker, queue, winning(broker, 1, face_value=1000, first_nonce=30))
    due(broker)
    report = Redeemer(broker, queue).run_once()
    assert sorted(report.redeemed) == sorted(good)
    assert list(report.given_up) == [cheap]
    assert "insufficient ticket face value" in report.given_up[cheap]
    assert not broker.used(cheap)


# ---- one failure in a batch ---------------------------------------------------------------


def test_a_ticket_failing_inside_a_batch_loses_none_of_the_others(queue: TicketQueue) -> None:
    chain = MemoryBroker(address=RECIPIENT)
    chain.register_transcoder(RECIPIENT)
    chain.register_transcoder(OTHER_RECIPIENT)
    chain.fund_deposit_and_reserve(SENDER, 3 * FACE_VALUE)
    hashes = enqueue(chain, queue, winning(chain, 3))
    (theirs,) = winning(chain, 1, first_nonce=99, recipient=OTHER_RECIPIENT)
    due(chain)
    # Between the estimates and the send, another orchestrator redeems the same sender's
    # ticket: the deposit left covers two of the batch's three tickets.
    chain.before_next_transaction(
        lambda: chain.account(OTHER_RECIPIENT).redeem_winning_ticket(theirs, gas=1_000_000)
    )
    redeemer = Redeemer(chain, queue)
    report = redeemer.run_once()
    assert sorted(report.redeemed) == sorted(hashes[:2])
    assert list(report.retried) == [hashes[2]] and report.given_up == {}
    reason = report.retried[hashes[2]]
    assert "not redeemed inside the batch" in reason and "insufficient" in reason
    assert not chain.used(hashes[2])
    assert chain.fees(RECIPIENT) == 2 * FACE_VALUE
    # Once the sender can pay, the ticket goes alone, ahead of anything else due.
    chain.fund_deposit_and_reserve(SENDER, 2 * FACE_VALUE)
    (later,) = enqueue(chain, queue, winning(chain, 1, first_nonce=4))
    due(chain)
    alone = redeemer.run_once()
    assert alone.redeemed == [hashes[2]]
    assert redeemer.run_once().redeemed == [later]


def test_a_batch_that_runs_out_of_gas_keeps_its_unpaid_tickets(
    broker: MemoryBroker, queue: TicketQueue
) -> None:
    hashes = enqueue(broker, queue, winning(broker, 3))
    due(broker)
    signed = [SignedTicket(t.ticket, t.sig, t.recipient_rand) for t in queue.pending()]
    # A limit that lets two sub-calls through (the EIP-150 share starves the third).
    tight = broker.estimate_batch_redeem(signed[:2]) + 10_000
    tx = broker.batch_redeem_winning_tickets(signed, gas=tight)
    assert tx.succeeded and len(tx.redeemed) == 2
    # The redeemer reads the outcome from the logs: it sends the third on its next run.
    # The redeemer finds two used by its own transaction (as after a lost receipt) and sends
    # the third.
    report = Redeemer(broker, queue).run_once()
    assert sorted(report.redeemed) == sorted(hashes) and report.retried == {}
    assert queue.counts() == {"redeemed": 3}


# ---- rounds, gas price -------------------------------------------------------------------


def test_an_uninitialized_round_sends_nothing(broker: MemoryBroker, queue: TicketQueue) -> None:
    hashes = enqueue(broker, queue, winning(broker, 2))
    broker.mine(broker.round_length())  # into the next round, not initialized
    report = Redeemer(broker, queue).run_once()
    assert report.skipped is not None and "not initialized" in report.skipped
    assert len(queue.pending()) == 2 and all(t.attempts == 0 for t in queue.pending())
    broker.initialize_round()
    assert sorted(Redeemer(broker, queue).run_once().redeemed) == sorted(hashes)


def test_an_expired_ticket_is_given_up(broker: MemoryBroker, queue: TicketQueue) -> None:
    (old,) = enqueue(broker, queue, winning(broker, 1))
    broker.next_round()
    broker.next_round()  # ticketValidityPeriod = 2
    report = Redeemer(broker, queue).run_once()
    assert report.given_up == {old: "ticket is expired"}
    assert queue.pending() == [] and queue.counts() == {"failed": 1}


def test_a_gas_price_above_the_maximum_leaves_everything_queued(
    broker: MemoryBroker, queue: TicketQueue
) -> None:
    enqueue(broker, queue, winning(broker, 3))
    due(broker)
    broker.set_gas_price(10**12)
    report = Redeemer(broker, queue, max_gas_price_wei=10**11).run_once()
    assert report.skipped is not None and "gas price" in report.skipped
    assert report.tx_hash is None and report.retried == {} and report.given_up == {}
    assert len(queue.pending()) == 3 and all(t.attempts == 0 for t in queue.pending())


# ---- the validator on the same chain -------------------------------------------------------


def test_the_validator_refuses_a_sender_that_unlocks_by_the_next_round(
    broker: MemoryBroker,
) -> None:
    issuer = TicketParamsIssuer(RECIPIENT, RecipientConfig(ev=5), bytes(range(32)))
    receiver = TicketReceiver(issuer, broker, MemoryNonceStore())
    params = issue_params(issuer, broker, SENDER, PRICE, pending=0)
    ticket = params.ticket(SENDER, 1)
    sig = Signer(SENDER_KEY).sign_hash(ticket.hash())
    kwargs = {
        "seed": params.seed,
        "expiration_block": params.expiration_block,
        "price_per_pixel": PRICE,
    }
    assert receiver.receive_ticket(ticket, sig, **kwargs).ticket == ticket
    broker.unlock(SENDER)  # withdrawable two rounds from now: still accepted
    later = params.ticket(SENDER, 2)
    assert receiver.receive_ticket(later, Signer(SENDER_KEY).sign_hash(later.hash()), **kwargs)
    broker.next_round()  # now it is the next round's
    later = params.ticket(SENDER, 3)
    with pytest.raises(SenderUnlocking):
        receiver.receive_ticket(later, Signer(SENDER_KEY).sign_hash(later.hash()), **kwargs)


# ---- both implementations are Brokers ----------------------------------------------------


@pytest.mark.parametrize("implementation", [ChainClient, MemoryBroker])
def test_implements_every_broker_method(implementation: type) -> None:
    for protocol in (Broker, ChainView):
        for name, member in inspect.getmembers(protocol):
            if name.startswith("_"):
                continue
            assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
            if inspect.isfunction(member):
                theirs = inspect.signature(getattr(implementation, name))
                assert list(theirs.parameters) == list(inspect.signature(member).parameters)
    assert "max_gas_price_wei" in Broker.__annotations__


@pytest.mark.timeout(300)
def test_mypy_accepts_both_as_brokers(tmp_path: Path) -> None:
    check = tmp_path / "brokers.py"
    check.write_text(
        "from chain.broker import Broker, ChainView\n"
        "from chain.client import ChainClient\n"
        "from chain.memory_broker import MemoryBroker\n"
        "from chain.validation import StaticChainView\n\n\n"
        "def client(c: ChainClient) -> Broker:\n    return c\n\n\n"
        "def memory(m: MemoryBroker) -> Broker:\n    return m\n\n\n"
        "def view(v: StaticChainView) -> ChainView:\n    return v\n"
    )
    root = Path(__file__).resolve().parents[2]
    out, err, status = mypy_api.run(
        [
            "--config-file",
            str(root / "pyproject.toml"),
            "--cache-dir",
            str(root / ".mypy_cache"),
            str(check),
        ]
    )
    assert status == 0, out + err
