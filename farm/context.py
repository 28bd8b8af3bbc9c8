"""A worker's context: what its tasks may touch, built once per worker kind.

Three kinds of worker run the farm's tasks: the local worker (farm.worker), the remote
transcoder (farm.remote.transcoder) and the go-livepeer bridge in the node
(farm.golivepeer.bridge). They differ only in their context, which each builds in one place
when it starts and installs on its Celery app:

- ``settings``: the cluster's settings;
- ``resources``: this cluster's clients (job store, blob store, registry), connected on first
  use, so a prefork child connects its own;
- ``stores``: where the job and blob operations go (the resources; on a remote transcoder,
  the orchestrator's node API);
- ``instance`` and ``gpu``: the worker's name in the capability registry (recorded on each
  attempt) and its GPU;
- ``engine``: the transcode step (the local engine; the bridge's attached transcoders);
- ``damage``: None in production; a chaos test's hook that damages each transcode's result
  (farm.media.damage.attempt_damage) before the attempt checks its verification;
- ``encoders``: the encoders this process keeps between the segments of a stream
  (farm.media.encoders); None where streams keep no state (remote transcoders, the bridge,
  ``FARM_STREAM_ENCODERS=false``);
- ``ai_pool``, ``ai_streams`` and ``chain``: an AI worker's runners, the LLM chunk stream
  client, the chain services (built on first use).

Tests inject an engine (failures) or damage through the context, never through the task path;
a worker process of a test gets its hook from the test's entry point
(tests/farm/damaged_worker.py).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from celery import Celery

from farm.jobs import StartOutcome
from farm.resources import Resources
from farm.settings import ClusterSettings

if TYPE_CHECKING:
    from farm.ai.pool import RunnerPool
    from farm.ai.stream import ChunkStream
    from farm.media.encoders import EncoderCache
    from farm.media.result import TranscodeResult

__all__ = ["BlobOps", "JobOps", "TaskStores", "WorkerContext", "install", "worker_context"]


class JobOps(Protocol):
    """The job-table operations a transcode task performs (JobStore, or the node API)."""

    def start_attempt(
        self,
        job_id: str,
        task_id: str,
        worker: str,
        instance: str | None = None,
        max_attempts: int | None = None,
        run_timeout_s: float = 60.0,
    ) -> StartOutcome: ...

    def complete(
        self,
        job_id: str,
        task_id: str,
        worker: str,
        result: dict[str, Any],
        timings: dict[str, Any] | None = None,
    ) -> bool: ...

    def attempt_failed(
        self, job_id: str, task_id: str, worker: str, code: str, error: str, *, final: bool
    ) -> bool: ...

    def last_error(self, job_id: str) -> str | None: ...


class BlobOps(Protocol):
    """Reading a job's input and writing its renditions (a blob store, or signed URLs)."""

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes) -> None: ...


class TaskStores(Protocol):
    """Where a task's job and blob operations go: this cluster's stores, or, on a remote
    transcoder, the orchestrator's node API (farm.remote.node_client.RemoteStores)."""

    @property
    def settings(self) -> ClusterSettings: ...

    @property
    def jobs(self) -> JobOps: ...

    @property
    def blobs(self) -> BlobOps: ...

    @property
    def writers(self) -> ThreadPoolExecutor: ...

    def announce(
        self, channel: Any, job_id: str, state: str, result: dict[str, Any] | None = None
    ) -> None:
        """Tell a final job's submitter (farm.notices); the job row already says it."""


@dataclass
class WorkerContext:
    """What one worker process's tasks may touch (this module's docstring)."""

    settings: ClusterSettings
    resources: Resources
    stores: TaskStores
    instance: str | None = None
    gpu: int | None = None
    #: ``engine(data, profiles, opts) -> TranscodeResult``; None: the local engine.
    engine: Callable[..., TranscodeResult] | None = None
    #: ``damage(result, attempt) -> TranscodeResult``, the result whose verification the
    #: attempt checks (the job's attempt number, from 1); None: the result as it is.
    damage: Callable[[TranscodeResult, int], TranscodeResult] | None = None
    encoders: EncoderCache | None = None
    #: stream -> when this process last pinned it to itself (time.monotonic()).
    pinned: dict[str, float] = field(default_factory=dict)
    ai_pool: RunnerPool | None = None
    ai_streams: ChunkStream | None = None
    chain: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def local(cls, settings: ClusterSettings) -> WorkerContext:
        """The context of a worker of this cluster (its own stores)."""
        resources = Resources(settings)
        return cls(settings, resources, resources)


def install(app: Celery, context: WorkerContext) -> WorkerContext:
    """Make ``context`` the one the tasks of ``app`` run in."""
    app.farm_context = context
    return context


def worker_context(app: Celery) -> WorkerContext:
    """The context the tasks of ``app`` run in (farm.worker_app.create_worker_app installs a local
    one; each worker kind replaces or completes it as it starts)."""
    context = getattr(app, "farm_context", None)
    if not isinstance(context, WorkerContext):
        raise RuntimeError("this Celery app was not created by farm.worker_app.create_worker_app")
    return context
