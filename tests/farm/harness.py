"""A cluster under test: real worker, beat and node processes started as the CLI starts them."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from farm.ai.client import AIClient
from farm.client import FarmClient, JobResult
from farm.registry import Capabilities, Registry
from farm.settings import ClusterSettings


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def check_renditions(client: FarmClient, job_id: str, names: list[str]) -> JobResult:
    """Wait for a 1 s, 30 fps job; check each rendition decodes with its reported size and
    frames from a keyframe, with audio, and that the encoded pixels add up."""
    import av

    result = client.wait(job_id, timeout=60)
    assert [r.name for r in result.renditions] == names
    for ref in result.renditions:
        data = client.rendition_bytes(ref)
        assert len(data) == ref.bytes
        with av.open(io.BytesIO(data)) as c:
            stream = c.streams.video[0]
            frames = list(c.decode(stream))
            assert (stream.width, stream.height) == (ref.width, ref.height)
            assert len(frames) == ref.frames == 30
            assert frames[0].key_frame
            assert c.streams.audio, "audio copied into the rendition"
    assert result.encoded_pixels == sum(r.frames * r.width * r.height for r in result.renditions)
    return result


@dataclass
class Cluster:
    """Environment for one test cluster and the processes started in it."""

    home: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    clients: list[FarmClient | AIClient] = field(default_factory=list)

    @property
    def settings(self) -> ClusterSettings:
        return ClusterSettings(
            broker_url=self.env["FARM_BROKER_URL"],
            result_backend=self.env.get("FARM_RESULT_BACKEND"),
            registry_url=self.env.get("FARM_REGISTRY_URL"),
            database_url=self.env["FARM_DATABASE_URL"],
            blob_url=self.env["FARM_BLOB_URL"],
            heartbeat_s=float(self.env["FARM_HEARTBEAT_S"]),
            queued_timeout_s=float(self.env["FARM_QUEUED_TIMEOUT_S"]),
        )

    def client(self) -> FarmClient:
        client = FarmClient(self.settings)
        self.clients.append(client)
        return client

    def ai_client(self) -> AIClient:
        client = AIClient(self.settings)
        self.clients.append(client)
        return client

    def registry(self) -> Registry:
        return Registry(self.settings.redis_registry_url(), self.settings.heartbeat_s)

    def spawn(
        self, *args: str, log: str, env: dict[str, str] | None = None, damage: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``farm ARGS`` in its own session, logging to ``home/log``; with ``damage``
        its transcodes are damaged so (tests.farm.damaged_worker)."""
        command = ["tests.farm.damaged_worker", damage] if damage else ["farm.cli"]
        with open(self.home / log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *command, *args],
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def farm(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``farm ARGS`` run to completion with this cluster's settings, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "farm.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start_worker(
        self, *extra: str, concurrency: int = 1, wait: bool = True, damage: str | None = None
    ) -> subprocess.Popen[bytes]:
        """A CPU worker; with ``damage`` (farm.media.damage.attempt_damage) one that damages
        its results."""
        before = {w.worker for w in self.live()}
        proc = self.spawn(
            "worker",
            "--cpu",
            "--concurrency",
            str(concurrency),
            *extra,
            log=f"worker-{len(self.processes)}.log",
            damage=damage,
        )
        if wait:
            wait_for(
                lambda: (
                    self.worker_of(proc) is not None and self.worker_of(proc).worker not in before
                ),  # type: ignore[union-attr]
                timeout=30,
                what="the worker's first heartbeat",
            )
        return proc

    def live(self) -> list[Capabilities]:
        registry = self.registry()
        try:
            return registry.live()
        finally:
            registry.close()

    def worker_of(self, proc: subprocess.Popen[bytes]) -> Capabilities | None:
        for w in self.live():
            if w.pid == proc.pid:
                return w
        return None

    def start_beat(self) -> subprocess.Popen[bytes]:
        return self.spawn(
            "beat",
            "--schedule",
            str(self.home / "beat-schedule"),
            "--loglevel",
            "INFO",
            log="beat.log",
        )

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        """kill -9 the process and everything it started (a worker and its pool)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.home.glob("*.log"))
        )


def cluster_env(
    home: Path,
    broker: str,
    database: str,
    *,
    backend: str | None = None,
    registry: str | None = None,
    blob: str | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(
        {
            "FARM_BROKER_URL": broker,
            "FARM_DATABASE_URL": database,
            "FARM_BLOB_URL": blob or f"file://{home / 'blobs'}",
            "FARM_HEARTBEAT_S": "0.5",
            "FARM_RECONCILE_S": "1",
            "FARM_QUEUED_TIMEOUT_S": "4",
            "FARM_MAX_ATTEMPTS": "3",
            **{k: v for k, v in os.environ.items() if k in ("FARM_POOL", "FARM_TASK_EVENTS")},
            "PYTHONUNBUFFERED": "1",
        }
    )
    if backend:
        env["FARM_RESULT_BACKEND"] = backend
    if registry:
        env["FARM_REGISTRY_URL"] = registry
    return env


def farm_chain(
    devchain_file: Path,
    *args: str,
    role: str = "orchestrator",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``farm chain --devchain FILE --as ROLE ARGS``, as an operator runs it."""
    cli = [sys.executable, "-m", "farm.cli", "chain"]
    return subprocess.run(
        [*cli, "--devchain", str(devchain_file), "--as", role, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
