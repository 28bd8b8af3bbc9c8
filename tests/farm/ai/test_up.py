"""``farm up`` with ``FARM_AI_MODELS``: an AI worker beside the transcode worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from farm.ai.client import AIClient
from farm.embedded import embedded_urls
from farm.registry import Registry
from farm.settings import ClusterSettings
from tests.farm.ai.helpers import decode, picture, png
from tests.farm.harness import free_port, wait_for

MODEL = "stabilityai/stable-diffusion-x4-upscaler"


def test_farm_up_starts_an_ai_worker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(
        FARM_HEARTBEAT_S="0.5",
        FARM_AI_MODELS=json.dumps([{"pipeline": "upscale", "model_id": MODEL}]),
    )
    cmd = [sys.executable, "-m", "farm.cli", "up", "--home", str(home)]
    cmd += ["--port", str(free_port()), "--gateway-port", str(free_port())]
    with open(tmp_path / "up.log", "ab") as log:
        up = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        urls = embedded_urls(home, f"redis+socket://{home.resolve() / 'redis.sock'}")
        settings = ClusterSettings(
            broker_url=urls["FARM_BROKER_URL"],
            database_url=urls["FARM_DATABASE_URL"],
            blob_url=urls["FARM_BLOB_URL"],
        )
        wait_for(lambda: (home / "redis.sock").exists(), timeout=60, what="the embedded Redis")
        registry = Registry(settings.redis_registry_url())
        with AIClient(settings) as client:

            def kinds() -> set[str]:
                return {w.worker.split("@")[0] for w in registry.live()}

            wait_for(lambda: kinds() == {"ai", "cpu"}, timeout=60, what="both workers")
            job_id = client.submit("upscale", MODEL, {"prompt": "x"}, {"image": png(picture())})
            result = client.wait(job_id, timeout=60)
            assert result.worker.startswith("ai@")
            assert decode(client.media(result.media[0].key)).shape == (192, 256, 3)
        registry.close()
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
