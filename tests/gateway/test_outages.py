"""The gateway's own services going away: answered 503 with Retry-After, never a 500, and
served again once they are back."""

from __future__ import annotations

import json
import time

import httpx

from farm.media.synth import make_segment
from tests.conftest import PG_URL
from tests.farm.harness import wait_for
from tests.gateway.conftest import Env
from tests.gateway.test_ingest import PROFILES
from tests.proxy import TcpProxy


def test_the_ledger_database_going_away_is_503_then_served_again(env: Env) -> None:
    proxy = TcpProxy.before(PG_URL)
    schema = env.schemas[-1]
    through = proxy.url(PG_URL)
    try:
        gw = env.gateway(
            FARM_GATEWAY_DATABASE_URL=f"{through}?options=-csearch_path%3D{schema}",
        )
        key_id, _ = gw.key(credits=10**6)
        topup = f"/admin/keys/{key_id}/topup"
        assert gw.admin("POST", topup, json={"amount": 1}).status_code == 200

        proxy.cut()
        for method, path, body in (("GET", "/admin/keys", None), ("POST", topup, {"amount": 1})):
            down = gw.admin(method, path, json=body)
            assert down.status_code == 503, down.text
            assert down.json()["code"] == "unavailable", down.json()
            assert "database" in down.json()["errors"][0]
            assert down.headers["retry-after"]
        health = httpx.get(f"{gw.url}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["checks"]["database"] is False

        proxy.restore()
        wait_for(
            lambda: gw.admin("POST", topup, json={"amount": 1}).status_code == 200,
            timeout=30,
            what="the gateway to use its database again",
        )
        assert gw.balance(key_id) == 10**6 + 2  # the refused top-up left nothing behind
        assert gw.proc.poll() is None
    finally:
        proxy.close()


def test_an_orchestrator_whose_broker_is_down_is_passed_over_promptly(env: Env) -> None:
    # The gateway reaches orch-a's broker (and result backend) through a proxy; its node API
    # still answers probes, so the gateway picks it first (same region) and must move on.
    a = env.orchs[0]
    broker = a.cluster.env["FARM_BROKER_URL"]
    if broker.startswith("redis+socket://"):  # a private Redis (see orchestrators())
        proxy = TcpProxy(broker[len("redis+socket://") :])
        through = f"redis://127.0.0.1:{proxy.port}/0"
    else:
        proxy = TcpProxy.before(broker)
        through = proxy.url(broker)
    configs = [o.config() for o in env.orchs]
    configs[0]["broker_url"] = through
    try:
        gw = env.gateway(FARM_ORCHESTRATORS=json.dumps(configs))
        _, key = gw.key(credits=10**9)
        proxy.cut()
        started = time.monotonic()
        r = httpx.post(
            f"{gw.url}/live/outage/0.ts",
            content=make_segment(320, 240, 30, 1.0),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Duration": "1000",
                "Livepeer-Transcode-Configuration": json.dumps({"profiles": PROFILES}),
            },
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert r.json()["orchestrator"] == "orch-b"
        assert time.monotonic() - started < 15
        assert gw.proc.poll() is None
    finally:
        proxy.close()
