"""Settling a job: the actual cost is charged in full, the balance never goes below zero."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.ledger import Ledger


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:
    ledger = Ledger(postgres_url)
    ledger.create_schema()
    yield ledger
    ledger.engine.dispose()


def test_a_cost_above_the_hold_is_charged_in_full(ledger: Ledger) -> None:
    _, key = ledger.create_key("k", 1000)
    ledger.reserve(key.id, 100, "job-1")
    assert ledger.settle(key.id, 100, 150, "job-1") == 150
    assert ledger.key(key.id).balance == 850
    # Settling again (a retried request) changes nothing and says what was charged.
    assert ledger.settle(key.id, 100, 150, "job-1") == 150
    assert ledger.key(key.id).balance == 850
    assert sum(e["amount"] for e in ledger.entries(key.id)) == 850


def test_a_cost_above_the_balance_takes_it_to_zero_and_no_further(ledger: Ledger) -> None:
    _, key = ledger.create_key("k", 120)
    ledger.reserve(key.id, 100, "job-2")
    assert ledger.settle(key.id, 100, 500, "job-2") == 120
    assert ledger.key(key.id).balance == 0
    assert sum(e["amount"] for e in ledger.entries(key.id)) == 0


def test_settlements_above_their_holds_race_without_going_negative(ledger: Ledger) -> None:
    _, key = ledger.create_key("k", 1000)
    for i in range(20):
        ledger.reserve(key.id, 10, f"job-{i}")
    with ThreadPoolExecutor(20) as pool:
        charged = list(pool.map(lambda i: ledger.settle(key.id, 10, 60, f"job-{i}"), range(20)))
    # 800 was left after the holds: the first 16 overruns of 50 fit, and what is charged
    # adds up to exactly what left the balance.
    assert ledger.key(key.id).balance == 0
    assert sum(charged) == 1000
    assert sum(e["amount"] for e in ledger.entries(key.id)) == 0
