"""The AI runners of one worker: capacity slots, health probes, and restarts.

As go-livepeer's AI worker does with its containers: each configured model has a runner and
``capacity`` slots. HTTP runners (an ai-runner at a URL, or a ``farm ai-runner`` process this
worker starts) are probed every few seconds; a down runner takes no jobs, and one this worker
started is restarted. Built-in runners run in the worker process and are always up.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm import metrics
from farm.ai.builtin import BuiltinPipeline, builtin_pipeline, collect_llm
from farm.ai.config import AIModelConfig
from farm.ai.health import COLD, DOWN, LOADING, UP, Health
from farm.ai.http_runner import HttpRunner, OnChunk
from farm.errors import InsufficientCapacity, RunnerFailed
from farm.settings import WorkerSettings

__all__ = ["ModelRunner", "RunnerPool", "RunnerProcess"]

log = logging.getLogger(__name__)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunnerProcess:
    """A ``farm ai-runner`` child process serving one built-in pipeline on a local port."""

    def __init__(self, config: AIModelConfig, token: str) -> None:
        builtin_pipeline(config.pipeline, config.model_id)  # ConfigError now, not at start
        self.config, self.token = config, token
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "farm.cli", "ai-runner", "--pipeline", self.config.pipeline]
        cmd += ["--model-id", self.config.model_id, "--port", str(self.port)]
        # The token goes by environment, not argv, so it never shows in a process list; the
        # rest of the environment is passed on for the runner's libraries (CUDA, Torch).
        env = {**os.environ, "FARM_AI_RUNNER_TOKEN": self.token}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        log.info("started ai-runner %s %s pid %d", *self.config.key, self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass(eq=False)
class ModelRunner:
    """One configured model: its runner, health and capacity slots."""

    config: AIModelConfig
    health: Health
    http: HttpRunner | None = None
    builtin: BuiltinPipeline | None = None
    process: RunnerProcess | None = None
    in_flight: int = 0
    restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def warm(self) -> bool:
        return self.config.warm or (self.process is not None and self.process.running)

    def advertise(self) -> dict[str, Any]:
        """This model's entry in the worker's heartbeat (farm.registry.Capabilities.ai_models)."""
        entry = self.config.public()
        entry.update(
            warm=self.warm,
            load=self.in_flight,
            status=self.health.state,
            health=self.health.last,
            restarts=self.restarts,
            runner_pid=self.process.proc.pid if self.process and self.process.proc else None,
        )
        return entry

    def run(
        self, params: dict[str, Any], files: dict[str, bytes], on_chunk: OnChunk | None
    ) -> dict[str, Any]:
        """The runner's response; failures of an HTTP runner count against its health."""
        if self.builtin is not None:
            result = self.builtin(params, files)
            if self.config.pipeline != "llm":
                return dict(result)
            chunks = []
            for chunk in result:
                chunks.append(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
            return collect_llm(chunks)
        assert self.http is not None
        try:
            return self.http.run(params, files, on_chunk)
        except RunnerFailed:
            with self.lock:
                self.health.failed()
            raise


class RunnerPool:
    """Every model of one AI worker."""

    def __init__(self, models: Sequence[AIModelConfig], settings: WorkerSettings) -> None:
        self.settings = settings
        self.runners: dict[tuple[str, str], ModelRunner] = {}
        for m in models:
            health = Health(loading_timeout_s=settings.ai_loading_timeout_s)
            runner = ModelRunner(m, health)
            if m.runner == "builtin":
                runner.builtin = builtin_pipeline(m.pipeline, m.model_id)
                health.state, health.last = UP, "built in"
            else:
                url, token = m.url, m.token
                if m.runner == "process":
                    token = token or secrets.token_urlsafe(24)
                    runner.process = RunnerProcess(m, token)
                    url = runner.process.url
                    health.state, health.last = COLD, "not started"
                assert url is not None
                runner.http = HttpRunner(
                    url,
                    m.pipeline,
                    m.model_id,
                    token,
                    timeout_s=settings.ai_timeout_s,
                    probe_timeout_s=settings.ai_probe_timeout_s,
                )
            self.runners[m.key] = runner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe_loop, name="farm-ai-probe", daemon=True)
        #: Called after a slot is taken or freed, so the worker can advertise its load at once
        #: (a router reading a stale "full" would send the next job to a cold worker).
        self.on_change: Callable[[], None] | None = None

    @property
    def pipelines(self) -> tuple[str, ...]:
        return tuple(sorted({p for p, _ in self.runners}))

    def start(self) -> None:
        """Start warm runner processes, probe every HTTP runner once, then keep probing."""
        for r in self.runners.values():
            if r.process is not None and r.config.warm:
                self._start_process(r)
        self.probe_once()
        self._thread.start()

    def _start_process(self, r: ModelRunner) -> None:
        assert r.process is not None
        r.process.start()
        r.health.reset(time.monotonic())

    def probe_once(self) -> None:
        """Probe every HTTP runner; restart runner processes that are down or exited."""
        for r in self.runners.values():
            if r.http is None or (r.process is not None and r.process.proc is None):
                continue
            exited = r.process is not None and not r.process.running
            status, why = (None, "the runner process exited") if exited else r.http.health()
            with r.lock:
                before = r.health.state
                if exited:
                    r.health.state, r.health.last = DOWN, why
                elif status is None and r.process is not None and before == LOADING:
                    status = "LOADING"  # still starting; the loading limit applies
                state = r.health.observe(status, time.monotonic(), why) if not exited else DOWN
            if state != before:
                log.warning("ai runner %s %s is %s (%s)", *r.config.key, state, r.health.last)
            if state == DOWN and r.process is not None:
                log.warning("restarting ai runner %s %s", *r.config.key)
                with r.lock:
                    r.process.stop()
                    self._start_process(r)
                    r.restarts += 1
                metrics.ai_runner_restarted(*r.config.key)

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.settings.ai_probe_s):
            try:
                self.probe_once()
            except Exception:  # the probe thread must outlive any one bad probe
                log.exception("ai runner probe failed")

    def acquire(self, pipeline: str, model_id: str) -> ModelRunner:
        """A slot on the model's runner; InsufficientCapacity when it is missing, down or full.

        A cold runner process is started here and waited for, up to the loading limit.
        """
        r = self.runners.get((pipeline, model_id))
        if r is None:
            raise InsufficientCapacity(f"this worker does not serve {pipeline} {model_id}")
        if r.process is not None:
            with r.lock:  # two first jobs at once start one process
                if r.process.proc is None:
                    self._start_process(r)
            self._wait_up(r)
        with r.lock:
            if r.health.state != UP:
                raise InsufficientCapacity(
                    f"{pipeline} {model_id} runner is {r.health.state} ({r.health.last})"
                )
            if r.in_flight >= r.config.capacity:
                raise InsufficientCapacity(
                    f"{pipeline} {model_id} runner is full ({r.config.capacity} in flight)"
                )
            r.in_flight += 1
        self._changed()
        return r

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # advertising is best effort; the regular beat follows
                log.exception("could not advertise the new load")

    def _wait_up(self, r: ModelRunner) -> None:
        assert r.http is not None
        deadline = time.monotonic() + self.settings.ai_loading_timeout_s
        while r.health.state in (LOADING, COLD) and time.monotonic() < deadline:
            status, why = r.http.health()
            with r.lock:
                if status in ("OK", "IDLE", "ERROR"):
                    r.health.observe(status, time.monotonic(), why)
            if r.health.state == LOADING:
                time.sleep(0.1)

    def release(self, r: ModelRunner) -> None:
        with r.lock:
            r.in_flight = max(0, r.in_flight - 1)
        self._changed()

    def advertise(self) -> list[dict[str, Any]]:
        return [r.advertise() for r in self.runners.values()]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for r in self.runners.values():
            if r.process is not None:
                r.process.stop()
            if r.http is not None:
                r.http.close()
