"""The bridge: a Celery worker on the node process that feeds go-livepeer transcoders.

It consumes the cluster's transcode queues of the codecs go-livepeer's protocol has (H.264,
HEVC, VP9: ``farm.queues.GOLIVEPEER_CODECS``; the same ``farm.transcode`` messages local workers
take) with a prefetch equal to the attached transcoders' total capacity, and runs the farm's
own task with :class:`~farm.golivepeer.engine.RemoteEngine` as its transcode step. It runs
only while some capacity is attached, and advertises that capacity in the registry (kind
``golivepeer``) so routing sees it. A task whose transcoder goes away fails as retryable and
goes back to the queue, where another worker takes it.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from typing import Any

import redis
from celery import Celery

from farm.context import worker_context
from farm.errors import ConfigError
from farm.golivepeer.engine import RemoteEngine
from farm.golivepeer.hub import Hub
from farm.queues import golivepeer_queue_error
from farm.registry import Capabilities, Heartbeat, Registry
from farm.settings import NodeSettings
from farm.worker_app import create_worker_app

__all__ = ["Bridge"]

log = logging.getLogger(__name__)
_START_TIMEOUT_S = 30.0


class Bridge:
    """Starts, resizes and stops the bridge's worker as transcoders come and go."""

    def __init__(self, settings: NodeSettings, hub: Hub, app: Celery | None = None) -> None:
        # Only the codecs go-livepeer's protocol has: any other would fail on every transcoder.
        problems = [p for p in map(golivepeer_queue_error, settings.golivepeer_queues) if p]
        if problems or not settings.golivepeer_queues:
            raise ConfigError(
                "FARM_GOLIVEPEER_QUEUES: " + ("; ".join(problems) or "no queue to consume")
            )
        self.settings = settings
        self.hub = hub
        self.name = f"golivepeer@{socket.gethostname()}:{os.getpid()}"
        self.app = app or create_worker_app(settings)
        # The prefetch is the attached capacity; Celery must not reduce or restore it itself.
        self.app.conf.worker_enable_prefetch_count_reduction = False
        self._changes: queue.Queue[int | None] = queue.Queue()
        self._control = threading.Thread(target=self._run, name="golivepeer-bridge", daemon=True)
        self._worker: Any = None
        self._worker_thread: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
        self._prefetch = 0
        hub.on_change = self._changes.put

    def start(self) -> None:
        # The bridge's context: attempts are recorded under its registry name (see
        # farm.tasks), so the reconciler sees them as live while it beats, and its transcode
        # step is the hub.
        context = worker_context(self.app)
        context.instance = self.name
        context.engine = RemoteEngine(self.hub)
        self._control.start()

    def stop(self) -> None:
        self.hub.on_change = None
        self._changes.put(None)
        self._control.join(timeout=60)
        self._stop_worker()

    def _run(self) -> None:
        while True:
            capacity = self._changes.get()
            while not self._changes.empty():  # only the latest total matters
                capacity = self._changes.get()
            if capacity is None:
                return
            try:
                self._resize(capacity)
            except Exception:
                log.exception("go-livepeer bridge could not resize to %s", capacity)

    def _resize(self, capacity: int) -> None:
        if capacity <= 0:
            self._stop_worker()
        elif self._worker is None:
            self._start_worker(capacity)
        elif capacity != self._prefetch:
            qos = self._worker.consumer.qos
            if capacity > self._prefetch:
                qos.increment_eventually(capacity - self._prefetch)
            else:
                qos.decrement_eventually(self._prefetch - capacity)
            self._prefetch = capacity
            log.info("go-livepeer bridge takes %d task(s) at once", capacity)

    def _start_worker(self, capacity: int) -> None:
        from celery.worker import WorkController

        self.app.finalize()
        # Retries publish through the current app; in every thread of this process that is
        # the bridge's (a Celery worker process sets its app the same way).
        self.app.set_default()
        self.app.set_current()
        worker = WorkController(
            app=self.app,
            hostname=self.name,
            pool="threads",
            concurrency=self.settings.golivepeer_max_sessions,
            queues=list(self.settings.golivepeer_queues),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=None,
        )
        worker.consumer.initial_prefetch_count = capacity
        thread = threading.Thread(target=worker.start, name="golivepeer-worker", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while getattr(worker.consumer, "qos", None) is None:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the go-livepeer bridge's worker did not start")
            time.sleep(0.05)
        self._worker, self._worker_thread, self._prefetch = worker, thread, capacity
        registry = Registry(self.settings.redis_registry_url(), self.settings.heartbeat_s)
        self._heartbeat = Heartbeat(registry, self._snapshot)
        self._heartbeat.start()
        log.info(
            "go-livepeer bridge consuming %s, %d task(s) at once",
            ", ".join(self.settings.golivepeer_queues),
            capacity,
        )

    def _publish(self, transcoders: list[dict[str, object]]) -> None:
        """The attached transcoders in their records, for ``farm transcoders`` on any host."""
        if self.hub.records is None:
            return
        try:
            ttl = max(3 * self.settings.heartbeat_s, 6.0)
            self.hub.records.publish(self.name, transcoders, ttl)
        except redis.RedisError as e:
            log.warning("could not publish the attached transcoders: %s", e)

    def _stop_worker(self) -> None:
        self._publish([])
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat.registry.close()
            self._heartbeat = None
        if self._worker is None:
            return
        self._worker.stop(in_sighandler=False)
        if self._worker_thread is not None:
            self._worker_thread.join(timeout=60)
        self._worker, self._worker_thread, self._prefetch = None, None, 0
        log.info("go-livepeer bridge stopped: no transcoder attached")

    def _drop_banned(self) -> None:
        """Detach the transcoders of hosts evicted since they attached (on any host)."""
        if self.hub.records is None:
            return
        try:
            banned = self.hub.records.banned()
        except redis.RedisError as e:
            log.warning("could not read the evicted go-livepeer hosts: %s", e)
            return
        if banned:
            self.hub.drop_hosts(banned, "evicted")

    def _snapshot(self) -> Capabilities:
        self._drop_banned()
        self._publish(self.hub.transcoders())
        queues = list(self.settings.golivepeer_queues)
        codecs = {q: q.rsplit(".", 1)[-1] for q in queues if q.startswith("transcode.")}
        return Capabilities(
            worker=self.name,
            queues=queues,
            capacity=self.hub.capacity(),
            region=self.settings.region,
            load=self.hub.load(),
            gpu_codecs=sorted({c for q, c in codecs.items() if ".gpu." in q}),
            cpu_codecs=sorted({c for q, c in codecs.items() if ".cpu." in q}),
            kind="golivepeer",
            pid=os.getpid(),
            ai_models=[],
            gpus=[],
        )
