"""Sender balances in Redis, shared by the node processes behind one service URI: each update
is one compare-and-swap against the value a process last saw, retried when another process
(or expiry) changed it since."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from fractions import Fraction

import pytest
import redis

from farm.orchestrator.balances import IDLE_S, Balances

SENDER = bytes.fromhex("11" * 20)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_credit_and_debit_are_exact(client: redis.Redis) -> None:
    b = Balances(client)
    assert b.add(SENDER, "s1", Fraction(10, 3)) == Fraction(10, 3)
    assert b.add(SENDER, "s1", -Fraction(1, 7)) == Fraction(67, 21)
    assert b.get(SENDER, "s1") == Fraction(67, 21)
    assert b.get(SENDER, "s2") == 0
    assert 0 < client.ttl(f"farm:orch:balance:{SENDER.hex()}:s1") <= IDLE_S


def test_another_process_update_is_not_lost(client: redis.Redis) -> None:
    a, b = Balances(client), Balances(client)
    a.add(SENDER, "s", Fraction(5))
    b.add(SENDER, "s", Fraction(7))  # a's remembered value is stale now
    assert a.add(SENDER, "s", Fraction(-2)) == 10
    assert b.get(SENDER, "s") == 10


def test_an_expired_balance_starts_again_at_zero(client: redis.Redis) -> None:
    b = Balances(client)
    b.add(SENDER, "s", Fraction(5))
    client.delete(f"farm:orch:balance:{SENDER.hex()}:s")  # what expiry after IDLE_S does
    assert b.add(SENDER, "s", Fraction(1)) == 1
    assert b.get(SENDER, "s") == 1


def test_concurrent_updates_from_two_processes_all_count(client: redis.Redis) -> None:
    stores = [Balances(client), Balances(client)]

    def credit(b: Balances) -> None:
        for _ in range(50):
            b.add(SENDER, "s", Fraction(1, 3))

    threads = [threading.Thread(target=credit, args=(b,)) for b in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].get(SENDER, "s") == Fraction(200, 3)
