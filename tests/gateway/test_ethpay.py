"""ETH-deposit payment on anvil: a client pays jobs with Livepeer tickets through the gateway."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine

from chain.compile import CompileError
from chain.devchain import DevChain, DevChainError, bootstrap, start_anvil
from chain.params import RecipientConfig, TicketParamsIssuer
from chain.payment import decode_payment, params_from_json
from chain.queue import TicketQueue
from chain.sender import TicketSender
from farm.media.synth import make_segment
from tests.gateway.conftest import Env, Gateway, orchestrators

PROFILES = '{"profiles":[{"name":"low","width":256,"height":144,"bitrate":300000,"fps":30}]}'
PIXELS = 30 * 256 * 144  # one 1 s segment at 30 fps in PROFILES
PRICE = 10_000_000  # wei per encoded pixel for ticket payers: a job costs about 11 tickets
EV = 10**12
SECRET = "11" * 32
EV = 10**12
SECRET = "11" * 32


@pytest.fixture(scope="module")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    try:
        node = start_anvil()
    except (CompileError, DevChainError, OSError, subprocess.SubprocessError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"anvil is needed in CI (npm ci --prefix chain/contracts): {e}")
        pytest.skip(f"anvil unavailable: {e}")
    try:
        yield bootstrap(node.web3(), tmp_path_factory.mktemp("chain") / "devchain.json")
    finally:
        node.stop()


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
    engine = create_engine(env.pg(env.schemas[-1]))
    assert len(TicketQueue(engine).pending()) == winners
    engine.dispose()

    # The same header again is a replay.
    again = push(gw, header, 2)
    assert again.status_code == 400 and "invalid ticket" in again.json()["errors"][0]
    assert balance_of(gw, address) == after


def test_bad_payment_headers(paid: tuple[Env, Gateway]) -> None:
    _, gw = paid
    for header in ("not-base64!!", "eyJzZW5kZXIiOiAiMHgxMiJ9"):
        r = push(gw, header, 9)
        assert r.status_code == 400 and "Livepeer-Payment" in r.json()["errors"][0]
    bad = httpx.get(f"{gw.url}/api/ticket-params", params={"sender": "0x12"}, timeout=10)
    assert bad.status_code == 400
