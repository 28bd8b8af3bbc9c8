"""Redeemer: winning tickets from a SQLite TicketQueue redeemed in batches on a real anvil."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from hexbytes import HexBytes

from chain.abi import ticket_tuple
from chain.client import ChainClient, ChainUnavailable
from chain.devchain import mine
from chain.queue import TicketQueue
from chain.redeem import Redeemer
from tests.chain.test_client import FACE_VALUE, Env, base, env

__all__ = ["base", "env"]  # the fixtures, imported for pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def queue(sqlite_url: str) -> TicketQueue:
    q = TicketQueue(sa.create_engine(sqlite_url))
    q.create_schema()
    return q


def _queue(env: Env, queue: TicketQueue, count: int, **kwargs: int) -> list[bytes]:
    """Queue ``count`` winning tickets; return their hashes."""
    hashes = []
    for ticket, sig, rand, expiration in env.winning(count, **kwargs):
        assert queue.add(ticket, sig, rand, expiration)
        hashes.append(ticket.hash())
    return hashes


def _function(env: Env, tx: Any) -> str:
    """The TicketBroker function a transaction called."""
    fn, _ = env.client.broker.decode_function_input(tx["input"])
    return str(fn.fn_name)


def _states(queue: TicketQueue, engine_url: str) -> dict[bytes, str]:
    engine = sa.create_engine(engine_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT ticket_hash, state FROM chain_winning_tickets"))
        return {bytes(h): s for h, s in rows}


def test_five_tickets_in_one_transaction(env: Env, queue: TicketQueue, sqlite_url: str) -> None:
    hashes = _queue(env, queue, 5)
    redeemer = Redeemer(env.client, queue)
    # Params not expired yet: nothing is due, nothing is sent.
    report = redeemer.run_once()
    assert report.tx_hash is None and report.redeemed == [] and len(queue.pending()) == 5

    expiration = queue.pending()[0].expiration_block
    env.mine_past(expiration)
    fees = env.client.fees(env.orch)
    nonce = env.tx_count()
    report = redeemer.run_once()
    assert report.skipped is None
    assert sorted(report.redeemed) == sorted(hashes)
    assert report.retried == {} and report.given_up == {}
    assert report.face_value_redeemed == 5 * FACE_VALUE
    assert env.tx_count() == nonce + 1
    assert env.client.fees(env.orch) - fees == 5 * FACE_VALUE
    assert all(env.client.used(h) for h in hashes)
    assert queue.pending() == []
    assert set(_states(queue, sqlite_url).values()) == {"redeemed"}
    assert report.tx_hash is not None
    tx = env.w3.eth.get_transaction(HexBytes(report.tx_hash))
    assert _function(env, tx) == "batchRedeemWinningTickets"
    # The limit is the sum of the tickets' estimates with headroom, and it was enough.
    assert tx["gas"] == report.gas_limit and 0 < report.gas_used < report.gas_limit
    # Nothing left: the next run does nothing.
    assert redeemer.run_once().tx_hash is None


def test_ticket_used_elsewhere_is_given_up(env: Env, queue: TicketQueue, sqlite_url: str) -> None:
    tickets = env.winning(3)
    for ticket, sig, rand, expiration in tickets:
        queue.add(ticket, sig, rand, expiration)
    # Anyone may submit a ticket: the deployer redeems the second one first.
    other = ChainClient.from_devchain(env.json_path, role="deployer")
    ticket, sig, rand, _ = tickets[1]
    other.transact(other.broker.functions.redeemWinningTicket(ticket_tuple(ticket), sig, rand))
    env.mine_past(tickets[0][3])
    report = Redeemer(env.client, queue).run_once()
    assert sorted(report.redeemed) == sorted([tickets[0][0].hash(), tickets[2][0].hash()])
    assert list(report.given_up) == [ticket.hash()]
    assert "ticket is used" in report.given_up[ticket.hash()]
    assert _states(queue, sqlite_url)[ticket.hash()] == "failed"


def test_lost_receipt_is_recorded_as_redeemed(
    env: Env, queue: TicketQueue, sqlite_url: str
) -> None:
    ((ticket, sig, rand, expiration),) = env.winning(1)
    queue.add(ticket, sig, rand, expiration)
    # Our own transaction redeemed it but its receipt never reached the queue.
    receipt = env.client.transact(
        env.client.broker.functions.redeemWinningTicket(ticket_tuple(ticket), sig, rand)
    )
    env.mine_past(expiration)
    report = Redeemer(env.client, queue).run_once()
    assert report.redeemed == [ticket.hash()] and report.tx_hash is None
    assert _states(queue, sqlite_url)[ticket.hash()] == "redeemed"
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        (tx,) = conn.execute(sa.text("SELECT tx_hash FROM chain_winning_tickets")).one()
    assert bytes(tx) == bytes(receipt["transactionHash"])


def test_insufficient_sender_funds_stays_pending(env: Env, queue: TicketQueue) -> None:
    params = env.chain.params
    good = _queue(env, queue, 2)
    (big,) = _queue(env, queue, 1, face_value=params.deposit + params.reserve + 1, first_nonce=10)
    env.mine_past(queue.pending()[0].expiration_block)
    report = Redeemer(env.client, queue).run_once()
    assert sorted(report.redeemed) == sorted(good)
    assert list(report.retried) == [big]
    assert "insufficient" in report.retried[big]
    (left,) = queue.pending()
    assert left.ticket.hash() == big and left.attempts == 1 and left.last_error
    assert not env.client.used(big)
    # Two tickets that each fit but not together: the second waits for the next run.
    queue2 = queue
    half = (params.deposit + params.reserve - 2 * FACE_VALUE) // 2 + 1
    a, b = _queue(env, queue2, 2, face_value=half, first_nonce=20)
    env.mine_past(queue.pending()[-1].expiration_block)
    report = Redeemer(env.client, queue2).run_once()
    assert report.redeemed == [a]
    assert b in report.retried and big in report.retried


def test_gas_price_above_max_leaves_everything_queued(env: Env, queue: TicketQueue) -> None:
    _queue(env, queue, 3)
    env.mine_past(queue.pending()[0].expiration_block)
    nonce = env.tx_count()
    report = Redeemer(env.client, queue, max_gas_price_wei=1).run_once()
    assert report.skipped is not None and "gas price" in report.skipped
    assert report.tx_hash is None and report.redeemed == []
    assert report.retried == {} and report.given_up == {}
    assert len(queue.pending()) == 3 and all(t.attempts == 0 for t in queue.pending())
    assert env.tx_count() == nonce


def test_face_value_below_tx_cost_share_is_dropped(env: Env, queue: TicketQueue) -> None:
    good = _queue(env, queue, 2)
    (cheap,) = _queue(env, queue, 1, face_value=1000, first_nonce=30)
    env.mine_past(queue.pending()[0].expiration_block)
    report = Redeemer(env.client, queue).run_once()
    assert sorted(report.redeemed) == sorted(good)
    assert list(report.given_up) == [cheap]
    assert "insufficient ticket face value" in report.given_up[cheap]
    assert not env.client.used(cheap)


def test_uninitialized_round_sends_nothing(env: Env, queue: TicketQueue) -> None:
    _queue(env, queue, 2)
    mine(env.w3, env.chain.round_length + 1)  # into the next round, not initialized
    report = Redeemer(env.client, queue).run_once()
    assert report.skipped is not None and "not initialized" in report.skipped
    assert len(queue.pending()) == 2
    env.initialize_round()
    assert len(Redeemer(env.client, queue).run_once().redeemed) == 2


def test_expired_ticket_is_given_up(env: Env, queue: TicketQueue) -> None:
    (old,) = _queue(env, queue, 1)
    env.next_round()
    env.next_round()  # ticketValidityPeriod = 2
    report = Redeemer(env.client, queue).run_once()
    assert report.given_up == {old: "ticket is expired"}
    assert queue.pending() == []


def test_rpc_down_loses_nothing(env: Env, queue: TicketQueue) -> None:
    hashes = _queue(env, queue, 2)
    env.mine_past(queue.pending()[0].expiration_block)
    dead = ChainClient("http://127.0.0.1:9", env.chain.contracts["Controller"], rpc_timeout_s=1)
    with pytest.raises(ChainUnavailable):
        Redeemer(dead, queue).run_once()
    assert sorted(t.ticket.hash() for t in queue.pending()) == sorted(hashes)
    assert all(t.attempts == 0 for t in queue.pending())
    assert sorted(Redeemer(env.client, queue).run_once().redeemed) == sorted(hashes)


def test_a_reserve_paid_ticket_alone_gets_the_gas_its_estimate_says(
    env: Env, queue: TicketQueue
) -> None:
    # Worth more than the deposit, the ticket draws on the reserve: the costliest redemption.
    # A fixed allowance below what it takes (250k against Livepeer's 376-411k; here, 50k
    # against the development contracts') had the batch swallow the out-of-gas every beat.
    params = env.chain.params
    (ticket,) = _queue(env, queue, 1, face_value=params.deposit + FACE_VALUE)
    env.mine_past(queue.pending()[0].expiration_block)
    redeemer = Redeemer(env.client, queue, gas_per_ticket=50_000, batch_base_gas=0)
    report = redeemer.run_once()
    assert report.redeemed == [ticket], (report.retried, report.given_up)
    assert report.tx_hash is not None
    tx = env.w3.eth.get_transaction(HexBytes(report.tx_hash))
    # Alone it is sent as itself: a failure would revert, never be swallowed.
    assert _function(env, tx) == "redeemWinningTicket"
    assert tx["gas"] == report.gas_limit and report.gas_used < report.gas_limit
    assert report.gas_limit >= report.gas_used * 5 // 4  # the estimate with its headroom
    info = env.client.sender_info(env.sender)
    assert info.deposit == 0 and info.reserve < params.reserve
    assert queue.pending() == []


def test_a_ticket_the_batch_would_pay_from_the_reserve_waits_for_the_next_run(
    env: Env, queue: TicketQueue
) -> None:
    # Estimated alone, the second ticket is paid from the deposit; after the first ticket of
    # the batch spends most of it, the second would draw on the reserve, which its estimate
    # did not cover. It waits, untouched, and goes next time with an estimate that does.
    params = env.chain.params
    (first,) = _queue(env, queue, 1, face_value=params.deposit - FACE_VALUE // 2)
    (second,) = _queue(env, queue, 1, first_nonce=2)
    env.mine_past(queue.pending()[-1].expiration_block)
    redeemer = Redeemer(env.client, queue)
    report = redeemer.run_once()
    assert report.redeemed == [first]
    assert list(report.waiting) == [second] and "reserve" in report.waiting[second]
    (left,) = queue.pending()
    assert left.ticket.hash() == second and left.attempts == 0
    again = redeemer.run_once()
    assert again.redeemed == [second]
    assert env.client.sender_info(env.sender).deposit == 0


def test_a_ticket_that_failed_inside_a_batch_goes_alone(env: Env, queue: TicketQueue) -> None:
    hashes = _queue(env, queue, 3)
    # As the redeemer records a ticket that reverted inside a batch while still redeemable.
    queue.retry_later(hashes[2], "not redeemed: not redeemed inside the batch (gas used 1 of 2)")
    env.mine_past(queue.pending()[0].expiration_block)
    redeemer = Redeemer(env.client, queue)
    report = redeemer.run_once()
    assert report.redeemed == [hashes[2]] and report.tx_hash is not None
    tx = env.w3.eth.get_transaction(HexBytes(report.tx_hash))
    assert _function(env, tx) == "redeemWinningTicket"
    assert sorted(redeemer.run_once().redeemed) == sorted(hashes[:2])
