"""The gateway's own services going away: answered 503 with Retry-After, never a 500, and
served again once they are back."""

from __future__ import annotations

import httpx
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.farm.harness import wait_for
from tests.gateway.conftest import Env
from tests.proxy import TcpProxy


def test_the_ledger_database_going_away_is_503_then_served_again(env: Env) -> None:
    real = make_url(PG_URL)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    schema = env.schemas[-1]
    through = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
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
