"""The gateway's AI routes on a Livepeer orchestrator reached over the network protocol.

A project node (``farm node`` over TLS) in front of its own cluster with an AI worker (the
built-in upscaler, priced, and the built-in development LLM) is the gateway's only pool
entry, of ``livepeer`` kind: the gateway asks GetOrchestrator for the model, POSTs the
pipeline's body with a signed SegData and a payment to the node's AI route, downloads the
media from the node and re-hosts them. Payment on chain is in tests/gateway/test_livepeer_chain.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
import sqlalchemy as sa

from tests.conftest import PG_URL, REDIS_HOST, REDIS_PORT, need_service
from tests.farm.ai.helpers import decode, picture, png, psnr, resize
from tests.farm.harness import Cluster, cluster_env
from tests.farm.test_orchestrator import OrchestratorNode
from tests.gateway.conftest import Env, Gateway

UPSCALER = "stabilityai/stable-diffusion-x4-upscaler"
ECHO = "farm/echo"
#: The node's price for the upscaler, wei per pixel.
UPSCALE_PRICE = 7


@dataclass
class World:
    env: Env
    node: OrchestratorNode
    gw: Gateway

    def gateway(self, **env: str) -> Gateway:
        return self.env.gateway(
            FARM_ORCHESTRATORS=json.dumps(
                [{"kind": "livepeer", "name": "net", "address": self.node.url, "region": "eu"}]
            ),
            FARM_AI_PRICE_PER_UNIT="1",
            FARM_RATE_BURST="1000",
            FARM_RATE_LIMIT_PER_MINUTE="60000",
            FARM_AI_RETRY_TIMEOUT_S="20",
            FARM_AI_JOB_TIMEOUT_S="60",
            FARM_SUSPEND_S="600",
            **env,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    need_service("PostgreSQL", "127.0.0.1", 5432)
    home = tmp_path_factory.mktemp("network-ai")
    base = int(os.environ.get("FARM_TEST_REDIS_DB") or 8 + (os.getpid() % 2) * 4)
    dbs = [base, base + 1]
    for db in dbs:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()
    engine = sa.create_engine(PG_URL)
    schemas = [f"g_{uuid.uuid4().hex[:10]}" for _ in dbs]
    with engine.begin() as conn:
        for s in schemas:
            conn.exec_driver_sql(f"CREATE SCHEMA {s}")
    env = Env(home, dbs, schemas)
    cluster_home = home / "node"
    cluster_home.mkdir()
    cluster = Cluster(
        cluster_home,
        cluster_env(
            cluster_home, f"redis://{REDIS_HOST}:{REDIS_PORT}/{dbs[0]}", env.pg(schemas[0])
        ),
    )
    cluster.env["FARM_AI_PROBE_S"] = "0.3"
    node = None
    try:
        models = [
            {
                "pipeline": "upscale",
                "model_id": UPSCALER,
                "warm": True,
                "price_per_unit": UPSCALE_PRICE,
                "pixels_per_unit": 1,
            },
            {"pipeline": "llm", "model_id": ECHO, "warm": True},
        ]
        cluster.start_worker("--ai-models", json.dumps(models))
        node = OrchestratorNode(cluster)
        world = World(env, node, None)  # type: ignore[arg-type]
        world.gw = world.gateway()
        yield world
    finally:
        for g in env.gateways:
            if g.poll() is None:
                g.terminate()
                g.wait(timeout=15)
        if node is not None:
            node.close()
        cluster.stop()
        with engine.begin() as conn:
            for s in schemas:
                conn.exec_driver_sql(f"DROP SCHEMA {s} CASCADE")
        engine.dispose()
        for db in dbs:
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()


def _auth(gw: Gateway) -> tuple[str, dict[str, str]]:
    key_id, key = gw.key(credits=10**9)
    return key_id, {"Authorization": f"Bearer {key}"}


def _attempts(gw: Gateway, key_id: str) -> list[tuple[str, str, str | None]]:
    (session_id,) = [
        s["id"] for s in gw.admin("GET", "/admin/sessions").json() if s["key_id"] == key_id
    ]
    session = gw.admin("GET", f"/admin/sessions/{session_id}").json()
    return [(a["orchestrator"], a["outcome"], a["error_code"]) for a in session["attempts"]]


def _orchestrator(gw: Gateway) -> dict[str, object]:
    (entry,) = gw.admin("GET", "/admin/orchestrators").json()
    return dict(entry)


def test_the_pool_learns_the_network_orchestrators_models_and_prices(world: World) -> None:
    entry = _orchestrator(world.gw)
    models = {(m["pipeline"], m["model_id"]): m for m in entry["ai_models"]}  # type: ignore[attr-defined]
    assert models[("upscale", UPSCALER)]["warm"] is True
    assert models[("upscale", UPSCALER)]["price"] == str(UPSCALE_PRICE)
    assert ("llm", ECHO) in models


def test_upscale_runs_on_the_network_orchestrator_and_its_media_are_rehosted(
    world: World,
) -> None:
    gw = world.gw
    key_id, auth = _auth(gw)
    source = picture(48, 36)
    r = httpx.post(
        f"{gw.url}/upscale",
        headers=auth,
        data={"prompt": "sharper", "seed": "7"},
        files={"image": ("in.png", png(source), "image/png")},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    (image,) = r.json()["images"]
    assert image["seed"] == 7
    # The node's URL is not passed on: the picture was fetched from it and is served here.
    assert image["url"].startswith("/ai/media/") and image["url"].endswith(".png")
    media = httpx.get(gw.url + image["url"], timeout=30)
    assert media.status_code == 200 and media.headers["content-type"] == "image/png"
    out = decode(media.content)
    assert out.shape == (144, 192, 3)
    assert psnr(out, resize(source, 192, 144, "bicubic")) > 30
    assert int(r.headers["livepeer-charged"]) == 48 * 36
    assert _attempts(gw, key_id) == [("net", "done", None)]


def test_an_llm_answer_streams_from_the_network_orchestrator(world: World) -> None:
    gw = world.gw
    key_id, auth = _auth(gw)
    body = {
        "model": ECHO,
        "messages": [{"role": "user", "content": "over the network"}],
        "stream": True,
        "max_tokens": 16,
    }
    with httpx.stream("POST", f"{gw.url}/llm", headers=auth, json=body, timeout=60) as r:
        assert r.status_code == 200
        raw = r.read().decode()
    chunks = [json.loads(e[len("data: ") :]) for e in raw.split("\n\n") if e]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "over the network"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert gw.balance(key_id) == 10**9 - 16
    r = httpx.post(f"{gw.url}/llm", headers=auth, json={**body, "stream": False}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "over the network"


def test_a_model_the_orchestrator_lacks_is_503_without_suspending_it(world: World) -> None:
    gw = world.gw
    key_id, auth = _auth(gw)
    r = httpx.post(
        f"{gw.url}/upscale",
        headers=auth,
        data={"prompt": "x", "model_id": "nobody/serves-this"},
        files={"image": ("in.png", png(picture(16, 16)), "image/png")},
        timeout=120,
    )
    assert r.status_code == 503, r.text
    assert gw.balance(key_id) == 10**9  # nothing charged
    ((name, outcome, code), *_) = _attempts(gw, key_id)
    assert (name, outcome, code) == ("net", "failed", "insufficient_capacity")
    assert _orchestrator(gw)["suspended"] is False


def test_an_orchestrator_quoting_over_the_ai_price_cap_is_left_out(world: World) -> None:
    capped = world.gateway(
        FARM_AI_MAX_PRICES=json.dumps(
            [{"pipeline": "upscale", "model_id": UPSCALER, "price_per_unit": UPSCALE_PRICE - 1}]
        )
    )
    _, auth = _auth(capped)
    r = httpx.post(
        f"{capped.url}/upscale",
        headers=auth,
        data={"prompt": "x"},
        files={"image": ("in.png", png(picture(16, 16)), "image/png")},
        timeout=120,
    )
    assert r.status_code == 503, r.text
    # Another model of the same orchestrator, under no cap, still runs there.
    r = httpx.post(
        f"{capped.url}/llm",
        headers=auth,
        json={
            "model": ECHO,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
            "max_tokens": 4,
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
