"""The one-command demo with AI: ``farm up`` with ``FARM_AI_MODELS`` answers ``POST /upscale``
and ``POST /llm`` at its gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from farm.settings import DEV_SECRET
from tests.farm.ai.helpers import decode, picture, png
from tests.farm.harness import free_port, wait_for

MODELS = [
    {"pipeline": "upscale", "model_id": "stabilityai/stable-diffusion-x4-upscaler", "warm": True},
    {"pipeline": "llm", "model_id": "farm/echo", "warm": True},
]


def test_farm_up_serves_the_ai_routes(tmp_path: Path) -> None:
    port, gw_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(
        FARM_HEARTBEAT_S="0.5",
        FARM_AI_MODELS=json.dumps(MODELS),
        FARM_AI_PRICES=json.dumps([{"pipeline": "upscale", "price_per_unit": 2}]),
    )
    cmd = [sys.executable, "-m", "farm.cli", "up", "--home", str(tmp_path / "home")]
    cmd += ["--port", str(port), "--gateway-port", str(gw_port)]
    with open(tmp_path / "up.log", "ab") as log:
        up = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    gateway = f"http://127.0.0.1:{gw_port}"
    try:

        def ai_worker_seen() -> bool:
            try:
                pool = httpx.get(
                    f"{gateway}/admin/orchestrators",
                    headers={"Authorization": f"Bearer {DEV_SECRET}"},
                    timeout=2,
                ).json()
            except (httpx.HTTPError, ValueError):
                return False
            return any(len(o["ai_models"]) == 2 for o in pool)

        wait_for(ai_worker_seen, timeout=90, what="farm up's gateway to see the AI worker")
        created = httpx.post(
            f"{gateway}/admin/keys",
            json={"name": "t", "credits": 10**6},
            headers={"Authorization": f"Bearer {DEV_SECRET}"},
            timeout=10,
        )
        auth = {"Authorization": f"Bearer {created.json()['key']}"}
        r = httpx.post(
            f"{gateway}/upscale",
            headers=auth,
            data={"prompt": "x"},
            files={"image": ("in.png", png(picture(32, 24)), "image/png")},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.headers["livepeer-charged"] == str(32 * 24 * 2)
        image = httpx.get(gateway + r.json()["images"][0]["url"], timeout=10)
        assert decode(image.content).shape == (96, 128, 3)
        chat = {"model": "farm/echo", "messages": [{"role": "user", "content": "hi there"}]}
        r = httpx.post(
            f"{gateway}/llm",
            headers=auth,
            json={**chat, "stream": False, "max_tokens": 16},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "hi there"
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
