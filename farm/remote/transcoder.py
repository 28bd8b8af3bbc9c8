"""``farm transcoder``: attach this machine to an orchestrator and work as one of its workers.

Registers over HTTPS (the node's certificate verified by CA or pinned fingerprint), then runs a
Celery worker on the queues the node gave, with the broker credential it issued, while a
thread heartbeats the node with the worker's load. The node unreachable: retry with
exponential backoff, at most ``max_backoff_s`` apart, forever. A wrong secret, a refused
registration, or a credential the node revoked or let expire: stop with a clear error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from farm.context import worker_context
from farm.errors import ConfigError, CredentialRevoked, NodeUnreachable
from farm.gpu import GpuInfo, detect_gpus, parse_gpu_selection
from farm.media.memory import keep_freed_memory
from farm.remote.node_client import NodeBlobs, NodeClient, NodeJobs, RemoteStores
from farm.remote.secrets import read_secret
from farm.remote.tls import pinned_context
from farm.settings import ClusterSettings, TranscoderSettings
from farm.worker import gpu_source, machine_codecs, worker_argv

__all__ = ["Backoff", "parse_addr", "run_transcoder"]

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff with jitter, capped (go-livepeer: cenkalti/backoff, 1 min cap)."""

    def __init__(self, cap_s: float, initial_s: float = 0.5, factor: float = 1.5) -> None:
        self.cap_s, self.initial_s, self.factor = cap_s, initial_s, factor
        self._next = initial_s

    def next(self) -> float:
        delay = min(self.cap_s, self._next * random.uniform(0.5, 1.5))
        self._next = min(self.cap_s, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class GrantedSettings(ClusterSettings):
    """The cluster settings a remote transcoder's Celery worker runs with: what the node
    granted and what the transcoder's own settings say, nothing read from this machine's
    environment or config.json (the cluster's URLs and secret are not the transcoder's)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    def secrets_in_use(self) -> dict[str, SecretStr]:
        return {}  # none of them is configured here; the node signs the blob URLs

    @model_validator(mode="after")
    def _derive(self) -> GrantedSettings:
        return self  # the grant names the result backend, or none: nothing is derived


def parse_addr(addr: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as a pair; ConfigError otherwise."""
    host, sep, port = addr.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--orch-addr must be HOST:PORT, not {addr!r}")
    return host, int(port)


def _context(settings: TranscoderSettings, host: str, port: int) -> ssl.SSLContext:
    if settings.orch_ca is not None:
        if not settings.orch_ca.is_file():
            raise ConfigError(f"CA file {settings.orch_ca} does not exist")
        return ssl.create_default_context(cafile=str(settings.orch_ca))
    if settings.orch_cert_fingerprint:
        return pinned_context(host, port, settings.orch_cert_fingerprint)
    return ssl.create_default_context()  # a node with a publicly trusted certificate


def _machine(settings: TranscoderSettings) -> tuple[GpuInfo | None, dict[str, Any]]:
    """The GPU this transcoder works on, and what it reports of its machine to the node."""
    source = gpu_source(settings)
    inventory = detect_gpus(source)
    spec = settings.gpus
    indices = parse_gpu_selection(spec, len(inventory.gpus)) if inventory.gpus else []
    if spec not in ("all", "none", "") and not inventory.gpus:
        raise ConfigError(f"--gpus {spec}: no GPU found ({inventory.error or 'none listed'})")
    gpus = [g for g in inventory.gpus if g.index in indices]
    gpu = gpus[0] if gpus else None
    nvenc, nvdec, cpu = machine_codecs(tuple(settings.codecs), gpu)
    return gpu, {
        "gpus": [g.to_dict() for g in gpus],
        "gpu_codecs": list(nvenc),
        "gpu_decoders": list(nvdec),
        "cpu_codecs": list(cpu),
    }


def _register(
    settings: TranscoderSettings, secret: str, report: dict[str, Any]
) -> tuple[NodeClient, dict[str, Any]]:
    host, port = parse_addr(settings.orch_addr)
    backoff = Backoff(settings.max_backoff_s)
    while True:
        try:
            node = NodeClient(f"https://{settings.orch_addr}", _context(settings, host, port))
            return node, node.register({"secret": secret, **report})
        except NodeUnreachable as e:
            delay = backoff.next()
            log.warning("orchestrator %s: %s; retrying in %.1f s", settings.orch_addr, e, delay)
            time.sleep(delay)


class NodeHeartbeat:
    """Heartbeats the node with the worker's load; on a revoked credential, stops the worker."""

    def __init__(
        self, node: NodeClient, interval_s: float, cap_s: float, load: Callable[[], int]
    ) -> None:
        self.node, self.interval_s, self.load = node, interval_s, load
        self.backoff = Backoff(cap_s)
        self.fatal: str | None = None
        self.ready = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="farm-node-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def stop_worker(self) -> None:
        """Cold-stop the Celery worker of this process (once it is running)."""
        if self.ready:
            os.kill(os.getpid(), signal.SIGQUIT)

    def _run(self) -> None:
        wait, failing = 0.0, False
        while not self._stop.wait(wait):
            try:
                self.node.heartbeat(self.load())
            except NodeUnreachable as e:
                wait, failing = self.backoff.next(), True
                log.warning("heartbeat failed: %s; retrying in %.1f s", e, wait)
                continue
            except CredentialRevoked as e:
                self.fatal = f"the orchestrator refused this transcoder's credential: {e}"
                log.error("%s; stopping", self.fatal)
                self.stop_worker()
                if not self._stop.wait(10.0):
                    _hard_exit(self.fatal)  # Celery sat in its broker reconnect loop
                return
            if failing:
                log.warning("orchestrator reachable again; heartbeats resumed")
                self.backoff.reset()
            wait, failing = self.interval_s, False


def _hard_exit(message: str) -> None:
    """Stop this process and its pool children now, with the message and status 1."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == me:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGKILL)
    os.write(2, f"error: {message}\n".encode())
    os._exit(1)


def run_transcoder(settings: TranscoderSettings, loglevel: str = "INFO") -> int:
    """Register and work until stopped; raises (exit non-zero) on a refusal or revocation."""
    from celery.signals import worker_ready, worker_shutdown
    from celery.worker import state

    from farm.worker_app import create_worker_app

    if settings.orch_secret is None:
        raise ConfigError("--orch-secret is required")
    secret = read_secret(settings.orch_secret.get_secret_value())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per heartbeat otherwise
    gpu, machine = _machine(settings)
    report = {
        "capacity": settings.capacity,
        "region": settings.region,
        "hostname": settings.hostname or socket.gethostname(),
        **machine,
    }
    node, grant = _register(settings, secret, report)
    name, queues = str(grant["name"]), list(grant["queues"])
    log.warning("attached to %s as %s, consuming %s", settings.orch_addr, name, ",".join(queues))
    worker_settings = GrantedSettings(
        broker_url=grant["broker_url"],
        result_backend=grant["result_backend"],
        max_attempts=int(grant["max_attempts"]),
        verify_renditions=bool(grant["verify_renditions"]),
        heartbeat_s=float(grant["heartbeat_s"]),
        region=settings.region,
        task_events=settings.task_events,
    )
    app = create_worker_app(worker_settings)
    app.conf.broker_connection_max_retries = None  # reconnect to the broker forever
    app.conf.worker_redirect_stdouts = False  # the exit message goes to stderr as it is
    # The remote transcoder's context: its jobs and blobs through the node API, its name as
    # the node granted it, its GPU.
    context = worker_context(app)
    context.stores = RemoteStores(worker_settings, NodeJobs(node), NodeBlobs(node))
    context.instance = name
    beat = NodeHeartbeat(
        node,
        float(grant["heartbeat_s"]),
        settings.max_backoff_s,
        lambda: len(state.active_requests),
    )

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        beat.ready = True
        if beat.fatal:
            beat.stop_worker()

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        beat.stop()

    beat.start()
    context.gpu = gpu.index if gpu is not None else None
    host = settings.hostname or socket.gethostname()
    argv = worker_argv(f"{name}@{host}", queues, settings.capacity, settings.pool, loglevel)
    keep_freed_memory()  # each segment reuses the memory the last one freed
    code: object = 0
    try:
        app.worker_main(argv)
    except SystemExit as e:
        code = e.code
    beat.stop()
    if beat.fatal:
        raise CredentialRevoked(beat.fatal)
    return code if isinstance(code, int) else 1
