"""ETH-deposit payment on anvil: a client pays jobs with Livepeer tickets through the gateway."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine
from web3 import Web3

from chain import pm_pb2
from chain.devchain import (
    Anvil,
    DevChain,
    bootstrap,
    contracts,
    mine,
    mine_to_next_round,
)
from chain.params import RecipientConfig, TicketParams, TicketParamsIssuer
from chain.payment import decode_payment, params_from_json, uint_bytes
from chain.queue import TicketQueue
from chain.sender import TicketSender
from farm.media.synth import make_segment
from tests.farm.harness import farm_chain, wait_for
from tests.gateway.conftest import ADMIN, Env, Gateway, orchestrators

PROFILES = '{"profiles":[{"name":"low","width":256,"height":144,"bitrate":300000,"fps":30}]}'
PIXELS = 30 * 256 * 144  # one 1 s segment at 30 fps in PROFILES
PRICE = 10**10  # wei per encoded pixel for ticket payers: a job costs about 11 tickets
EV = 10**15  # worth redeeming: above a ticket's share of the batch transaction's cost
SECRET = "11" * 32
AI_PRICE = 10**12  # wei per AI unit: 1000 x characters for text-to-speech


@pytest.fixture(scope="module")
def devchain_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chain") / "devchain.json"


@pytest.fixture(scope="module")
def devchain(anvil: Anvil, devchain_file: Path) -> DevChain:
    return bootstrap(anvil.web3(), devchain_file)


@pytest.fixture(scope="module")
def paid(
    tmp_path_factory: pytest.TempPathFactory, devchain: DevChain
) -> Iterator[tuple[Env, Gateway]]:
    with orchestrators(tmp_path_factory.mktemp("ethpay"), [("orch-a", "eu", {})]) as env:
        gw = env.gateway(
            FARM_ETH_RPC_URL=devchain.rpc_url,
            FARM_ETH_CONTROLLER=devchain.contracts["Controller"],
            FARM_ETH_RECIPIENT=devchain.orchestrator.address,
            FARM_TICKET_SECRET=SECRET,
            FARM_ETH_PRICE_PER_PIXEL=f"{PRICE}/1",
            FARM_TICKET_EV_WEI=str(EV),
            # Face value capped at the EV: every ticket wins, so winners are many and known.
            FARM_TICKET_MAX_FACE_VALUE_WEI=str(EV),
            FARM_REDEEM_GAS="1",
            FARM_ESTIMATE_MARGIN="0",
            FARM_AI_PRICE_PER_UNIT=str(AI_PRICE),
        )
        yield env, gw


def push(gw: Gateway, header: str, seq: int) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/live/eth/{seq}.ts",
        content=make_segment(320, 240, 30, 1.0),
        headers={
            "Livepeer-Payment": header,
            "Content-Duration": "1000",
            "Livepeer-Transcode-Configuration": PROFILES,
        },
        timeout=120,
    )


def broadcaster(gw: Gateway, devchain: DevChain) -> tuple[TicketSender, str, TicketParams]:
    """The funded sender, its address, and fresh ticket params for it from the gateway."""
    sender = TicketSender(devchain.broadcaster.private_key)
    address = "0x" + sender.address.hex()
    got = httpx.get(f"{gw.url}/api/ticket-params", params={"sender": address}, timeout=30)
    assert got.status_code == 200, got.text
    return sender, address, params_from_json(got.json()["ticketParams"])


def balance_of(gw: Gateway, address: str) -> int:
    keys = gw.admin("GET", "/admin/keys").json()
    return next(int(k["balance"]) for k in keys if k["name"] == f"eth:{address.lower()}")


def test_pay_jobs_with_tickets(paid: tuple[Env, Gateway], devchain: DevChain) -> None:
    env, gw = paid
    sender = TicketSender(devchain.broadcaster.private_key)
    address = "0x" + sender.address.hex()
    got = httpx.get(f"{gw.url}/api/ticket-params", params={"sender": address}, timeout=30)
    assert got.status_code == 200, got.text
    assert got.json()["price"] == {"pricePerUnit": PRICE, "pixelsPerUnit": 1}
    params = params_from_json(got.json()["ticketParams"])
    assert params.recipient.hex() == devchain.orchestrator.address[2:].lower()
    assert params.face_value == EV, (params.face_value, params.win_prob)
    assert params.win_prob == 2**256 - 1, params.win_prob / 2**256

    # Too little: one ticket cannot pay for the segment; go-livepeer's answer, no charge.
    short_header = sender.pay(params, 1)
    short = push(gw, short_header, 0)
    assert short.status_code == 400 and "Insufficient balance" in short.json()["errors"][0]
    credited = balance_of(gw, address)
    assert 0 < credited < PIXELS * PRICE

    # Enough: tickets worth the job; the balance is debited price x encoded pixels.
    header = sender.pay(params, PIXELS * PRICE)
    ok = push(gw, header, 1)
    assert ok.status_code == 200, ok.text
    assert ok.json()["charged"] == PIXELS * PRICE
    after = balance_of(gw, address)
    tickets = sender.tickets_for(params, PIXELS * PRICE)
    ev = params.ticket(sender.address, 0).expected_value()
    assert after == credited + int(ev * tickets) - PIXELS * PRICE

    # Exactly the winners are queued for redemption: the draw, redone here with the secret.
    issuer = TicketParamsIssuer(
        params.recipient, RecipientConfig(ev=EV, max_face_value=EV), bytes.fromhex(SECRET)
    )
    winners = 0
    for h in (short_header, header):
        for ticket, sig in decode_payment(h).tickets:
            rand = issuer.recipient_rand(
                params.seed,
                ticket.sender,
                ticket.face_value,
                ticket.win_prob,
                params.expiration_block,
                params.price_per_pixel,
                ticket.aux_data,
            )
            winners += ticket.is_winning(sig, rand)
    assert winners == tickets + 1  # every ticket of both payments
    # Winners wait in the queue the orchestrator cluster's chain worker redeems from.
    engine = create_engine(env.orchs[0].cluster.env["FARM_DATABASE_URL"])
    assert len(TicketQueue(engine).pending()) == winners
    engine.dispose()

    # The same header again is a replay.
    again = push(gw, header, 2)
    assert again.status_code == 400 and "invalid ticket" in again.json()["errors"][0]
    assert balance_of(gw, address) == after


def test_pay_ai_requests_with_tickets(paid: tuple[Env, Gateway], devchain: DevChain) -> None:
    _, gw = paid
    sender, address, params = broadcaster(gw, devchain)
    keys = gw.admin("GET", "/admin/keys").json()
    before = sum(int(k["balance"]) for k in keys if k["name"] == f"eth:{address.lower()}")
    # A text that costs more than the balance plus one ticket (1000 x characters units).
    text = "x" * ((before + EV) // (1000 * AI_PRICE) + 1)
    cost = 1000 * len(text) * AI_PRICE

    def speak(header: str) -> httpx.Response:
        return httpx.post(
            f"{gw.url}/text-to-speech",
            json={"text": text},
            headers={"Livepeer-Payment": header},
            timeout=60,
        )

    short = speak(sender.pay(params, 1))
    assert short.status_code == 400
    assert short.json()["error"]["message"].startswith("Insufficient balance")
    credited = balance_of(gw, address)
    assert before < credited < cost
    # Paid enough; this orchestrator has no AI workers, so nothing is charged.
    unserved = speak(sender.pay(params, cost))
    assert unserved.status_code == 503
    assert unserved.json() == {"error": {"message": "Service Unavailable Error"}}
    assert balance_of(gw, address) >= credited + cost


def test_bad_payment_headers(paid: tuple[Env, Gateway]) -> None:
    _, gw = paid
    # Not base64; a JSON header (not a protobuf Payment); a Payment with a short sender.
    for header in ("not-base64!!", "eyJzZW5kZXIiOiAiMHgxMiJ9", "EgES"):
        r = push(gw, header, 9)
        assert r.status_code == 400 and "Livepeer-Payment" in r.json()["errors"][0]
    bad = httpx.get(f"{gw.url}/api/ticket-params", params={"sender": "0x12"}, timeout=10)
    assert bad.status_code == 400


def _tampered(header: str, **changes: bytes) -> str:
    body = pm_pb2.Payment()
    body.ParseFromString(base64.b64decode(header))
    for field, value in changes.items():
        setattr(body.ticket_params, field, value)
    return base64.b64encode(body.SerializeToString()).decode()


def test_refused_payments_credit_nothing(paid: tuple[Env, Gateway], devchain: DevChain) -> None:
    _, gw = paid
    sender, address, params = broadcaster(gw, devchain)
    before = balance_of(gw, address)
    header = sender.pay(params, PIXELS * PRICE)
    other = "0x" + "22" * 20
    body = pm_pb2.Payment()
    body.ParseFromString(base64.b64decode(header))
    sig = bytearray(body.ticket_sender_params[-1].sig)
    sig[5] ^= 1  # one bit of the last ticket's signature
    body.ticket_sender_params[-1].sig = bytes(sig)
    forged = base64.b64encode(body.SerializeToString()).decode()
    for bad, reason in [
        (forged, "signature"),
        (_tampered(header, win_prob=uint_bytes(params.win_prob - 1)), "recipientRand"),
        (_tampered(header, face_value=uint_bytes(params.face_value * 2)), "recipientRand"),
        (_tampered(header, recipient=bytes.fromhex(other[2:])), "not this node"),
    ]:
        r = push(gw, bad, 20)
        assert r.status_code == 400 and reason in r.json()["errors"][0], r.text
    # A refused payment spends none of its tickets: the intact header still pays.
    assert balance_of(gw, address) == before
    ok = push(gw, header, 22)
    assert ok.status_code == 200, ok.text
    before = balance_of(gw, address)
    header = sender.pay(params, PIXELS * PRICE)
    # Params past their expiration block are refused: the client must fetch new ones.
    w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
    mine(w3, params.expiration_block + 1 - w3.eth.block_number)
    expired = push(gw, header, 21)
    assert expired.status_code == 400 and "expired" in expired.json()["errors"][0]
    assert balance_of(gw, address) == before


def test_winners_are_redeemed_on_beat_and_fees_withdrawn(
    paid: tuple[Env, Gateway], devchain: DevChain, devchain_file: Path
) -> None:
    env, _ = paid
    engine = create_engine(env.orchs[0].cluster.env["FARM_DATABASE_URL"])
    queue = TicketQueue(engine)
    waiting = queue.pending()
    assert waiting, "the payment test left winners to redeem"
    w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
    mine(w3, max(q.expiration_block for q in waiting) + 1 - w3.eth.block_number)
    orch = env.orchs[0].cluster
    chain_env = dict(
        orch.env,
        FARM_ETH_RPC_URL=devchain.rpc_url,
        FARM_ETH_CONTROLLER=devchain.contracts["Controller"],
        FARM_ETH_PRIVATE_KEY=devchain.orchestrator.private_key,
        FARM_REDEEM_INTERVAL_S="1",
        FARM_REWARD_INTERVAL_S="1",
    )
    worker = orch.spawn(
        "worker", "--cpu", "--chain", "--concurrency", "1", log="chain-worker.log", env=chain_env
    )
    beat = orch.spawn(
        "beat", "--schedule", str(orch.home / "chain-beat"), log="chain-beat.log", env=chain_env
    )
    wait_for(lambda: not queue.pending(), timeout=90, what="the winners to be redeemed")
    assert queue.counts() == {"redeemed": len(waiting)}
    engine.dispose()
    for proc in (beat, worker):  # no more chain transactions from this key while we count
        proc.terminate()
        proc.wait(timeout=30)
    me = devchain.orchestrator.address
    fees = int(
        contracts(w3, devchain.contracts)["BondingManager"].functions.pendingFees(me, 0).call()
    )
    # Its own pool with one delegator: all of it, less a few wei of fixed-point rounding.
    assert fees >= sum(q.ticket.face_value for q in waiting) - 100
    balance = w3.eth.get_balance(me)
    out = farm_chain(devchain_file, "withdraw-fees")
    assert out.returncode == 0, out.stderr
    tx = out.stdout.split("tx ", 1)[1].split(",", 1)[0]
    receipt = w3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(me) - balance + gas_cost == fees


def test_operator_sets_the_ticket_price(
    paid: tuple[Env, Gateway], devchain: DevChain, devchain_file: Path
) -> None:
    _, gw = paid
    sender = TicketSender(devchain.broadcaster.private_key)
    address = "0x" + sender.address.hex()

    def quote() -> httpx.Response:
        return httpx.get(f"{gw.url}/api/ticket-params", params={"sender": address}, timeout=30)

    old = params_from_json(quote().json()["ticketParams"])

    # livepeer_cli's price setting: the gateway quotes it in params issued from now on.
    def config(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return farm_chain(
            devchain_file,
            "config",
            *args,
            "--gateway-url",
            gw.url,
            env={**os.environ, "FARM_ADMIN_TOKEN": token},
        )

    out = config(ADMIN, "--price-per-unit", str(3 * PRICE + 1), "--pixels-per-unit", "2")
    assert out.returncode == 0, out.stderr
    assert f"{3 * PRICE + 1} wei per 2 pixel(s)" in out.stdout
    try:
        got = quote()
        assert got.json()["price"] == {"pricePerUnit": 3 * PRICE + 1, "pixelsPerUnit": 2}
        new = params_from_json(got.json()["ticketParams"])
        assert new.price_per_pixel == Fraction(3 * PRICE + 1, 2)
        cost = -(-PIXELS * (3 * PRICE + 1) // 2)
        ok = push(gw, sender.pay(new, cost), 40)
        assert ok.status_code == 200, ok.text
        assert ok.json()["charged"] == cost
        # Params issued before the change keep the price they quoted.
        assert old.price_per_pixel == PRICE
        kept = push(gw, sender.pay(old, PIXELS * PRICE), 41)
        assert kept.status_code == 200, kept.text
        assert kept.json()["charged"] == PIXELS * PRICE
        wrong = config("not-the-token", "--price-per-unit", "5")
        assert wrong.returncode == 1 and "403" in wrong.stderr
        assert quote().json()["price"]["pricePerUnit"] == 3 * PRICE + 1
    finally:
        reset = gw.admin("PUT", "/admin/price", json={"price_per_unit": PRICE})
        assert reset.json() == {"price_per_unit": PRICE, "pixels_per_unit": 1}


def test_an_unlocking_sender_is_refused(
    paid: tuple[Env, Gateway], devchain: DevChain, devchain_file: Path
) -> None:
    _, gw = paid
    out = farm_chain(devchain_file, "unlock", role="broadcaster")
    assert out.returncode == 0, out.stderr
    # The unlock counts once the next round is initialized.
    w3 = Web3(Web3.HTTPProvider(devchain.rpc_url))
    mine_to_next_round(w3, contracts(w3, devchain.contracts)["RoundsManager"])
    mine(w3, 1)
    init = farm_chain(devchain_file, "round", "--initialize", role="deployer")
    assert init.returncode == 0, init.stderr
    sender = TicketSender(devchain.broadcaster.private_key)
    got = httpx.get(
        f"{gw.url}/api/ticket-params", params={"sender": "0x" + sender.address.hex()}, timeout=30
    )
    if got.status_code == 200:
        params = params_from_json(got.json()["ticketParams"])
        r = push(gw, sender.pay(params, PIXELS * PRICE), 30)
        assert r.status_code == 400 and "unlock" in r.json()["errors"][0], r.text
    else:
        assert got.status_code == 400, got.text
