"""Sampled cross-checks: an orchestrator that returns a different picture is suspended."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from farm.media.synth import make_segment
from tests.gateway.conftest import Env, orchestrators

PROFILES = json.dumps(
    {"profiles": [{"name": "low", "width": 256, "height": 144, "bitrate": 300000, "fps": 30}]}
)


@pytest.fixture(scope="module")
def env3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # orch-c's worker passes its own verification but returns another picture (chaos).
    with orchestrators(
        tmp_path_factory.mktemp("crosscheck"),
        [("orch-a", "eu", {}), ("orch-b", "eu", {}), ("orch-c", "eu", {})],
        damage={"orch-c": "picture"},
    ) as e:
        yield e


def test_cross_check_suspends_the_orchestrator_with_a_different_picture(env3: Env) -> None:
    gw = env3.gateway(FARM_VERIFICATION_FREQ="1", FARM_SUSPEND_S="600")
    key_id, key = gw.key(credits=10**9)
    segment = make_segment(320, 240, 30, 1.0)
    r = httpx.post(
        f"{gw.url}/live/xc/0.ts",
        content=segment,
        timeout=120,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Duration": "1000",
            "Livepeer-Transcode-Configuration": PROFILES,
        },
    )
    assert r.status_code == 200, r.text
    # Whoever served first, the answer is the majority's picture, not orch-c's.
    assert r.json()["orchestrator"] in ("orch-a", "orch-b")
    pool = {o["name"]: o for o in gw.admin("GET", "/admin/orchestrators").json()}
    assert pool["orch-c"]["suspended"] is True
    assert not pool["orch-a"]["suspended"] and not pool["orch-b"]["suspended"]
    attempts = httpx.get(
        f"{gw.url}/api/sessions/{key_id}:xc", timeout=10, headers={"Authorization": f"Bearer {key}"}
    ).json()["attempts"]
    disagreed = [a for a in attempts if a["outcome"] == "disagreed"]
    assert [a["orchestrator"] for a in disagreed] == ["orch-c"]
    assert "PSNR" in disagreed[0]["error"]
    agreeing = {a["orchestrator"] for a in attempts if a["outcome"] in ("done", "verified")}
    assert {"orch-a", "orch-b"} <= agreeing  # orch-c may have served first: then it is "done"
