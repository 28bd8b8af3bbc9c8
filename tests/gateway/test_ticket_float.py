"""The sender monitor: winners waiting for redemption lower what a sender can still float."""

from __future__ import annotations

from fractions import Fraction

from sqlalchemy import create_engine

from chain.params import RecipientConfig
from chain.payment import params_from_json
from gateway.ethpay import EthPayments
from gateway.ledger import Ledger
from tests.chain.test_client import Env, base, env  # noqa: F401 - fixtures


def test_pending_winners_lower_the_face_value(
    env: Env,  # noqa: F811 - the fixture imported above
    redis_url: str,
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url)
    ledger = Ledger(engine)
    ledger.create_schema()
    # A redemption so dear that the face value is capped by the sender's float.
    config = RecipientConfig(ev=10**9, redeem_gas=10**9, tx_cost_multiplier=10**6)
    eth = EthPayments(
        env.client, ledger, engine, redis_url, env.orch, bytes(range(32)), Fraction(1), config
    )
    try:
        float_ = env.client.max_float(env.sender, env.orch)
        first = params_from_json(eth.ticket_params(env.sender)["ticketParams"])
        assert first.face_value == float_

        (ticket, sig, rand, expiration), (other, osig, orand, oexp) = env.winning(
            2, face_value=float_ // 4
        )
        assert eth.queue.add(ticket, sig, rand, expiration)
        assert eth.queue.pending_face_value(env.sender) == float_ // 4
        second = params_from_json(eth.ticket_params(env.sender)["ticketParams"])
        assert second.face_value == float_ - float_ // 4

        # Redeemed winners are no longer owed.
        assert eth.queue.add(other, osig, orand, oexp)
        eth.queue.redeemed(ticket.hash(), b"\x01" * 32)
        assert eth.queue.pending_face_value(env.sender) == float_ // 4
        assert eth.queue.pending_face_value(env.orch) == 0
    finally:
        eth.close()
        engine.dispose()
