"""A remote transcoder's side of the node API: registration, heartbeats, and the job and blob
operations its tasks perform through the node instead of the job table and blob store.

:class:`NodeJobs` and :class:`NodeBlobs` have the methods the transcode task calls on the
local :class:`~farm.jobs.JobStore` and blob store, so the task body is the same for both.
"""

from __future__ import annotations

import os
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

# The node answers a missing blob or job with BlobMissing's and JobNotFound's codes: their
# modules are loaded here so that error_class knows them.
import farm.blobstore  # noqa: F401
from farm.errors import CredentialRevoked, NodeUnreachable, RetryableError, rebuild
from farm.jobs import StartOutcome
from farm.settings import ClusterSettings

__all__ = ["NodeBlobs", "NodeClient", "NodeJobs", "RemoteStores"]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, message = str(body.get("error")), str(body.get("message"))
    except (ValueError, AttributeError):
        code, message = "", response.text[:200]
    # The node's refusals come back as their own errors; a retryable or unknown failure is
    # the node being unusable for now (the transcoder reconnects with backoff).
    error = rebuild(code, message)
    if type(error).code == code and not isinstance(error, RetryableError):
        raise error
    if response.status_code == 401:
        raise CredentialRevoked(message or "unauthorized")
    raise NodeUnreachable(f"node API answered {response.status_code}: {message}")


class NodeClient:
    """HTTPS to one node API, verified by the given context; one connection pool per process
    (a prefork pool child makes its own)."""

    def __init__(self, base_url: str, context: ssl.SSLContext, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.context = context
        self.timeout_s = timeout_s
        self.auth: str | None = None
        self._client: httpx.Client | None = None
        self._pid = 0

    def _http(self) -> httpx.Client:
        if self._client is None or self._pid != os.getpid():
            self._client = httpx.Client(
                base_url=self.base_url, verify=self.context, timeout=self.timeout_s
            )
            self._pid = os.getpid()
        return self._client

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        retry_s: float = 0.0,
    ) -> httpx.Response:
        """One call; network failures are retried for ``retry_s``, then NodeUnreachable."""
        headers = {"Authorization": f"Bearer {self.auth}"} if self.auth else {}
        deadline = time.monotonic() + retry_s
        delay = 0.25
        while True:
            try:
                response = self._http().request(
                    method, path, json=json, content=content, headers=headers
                )
                break
            except httpx.TransportError as e:
                if time.monotonic() + delay > deadline:
                    raise NodeUnreachable(f"node API {self.base_url} unreachable: {e}") from e
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        _raise_for(response)
        return response

    def call(self, path: str, body: dict[str, Any], retry_s: float = 20.0) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", path, json=body, retry_s=retry_s).json()
        return result

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        """Register; the node's answer (id, queues, heartbeat, credential, broker URL)."""
        grant = self.call("/transcoders/register", body, retry_s=0.0)
        self.auth = f"{grant['id']}:{grant['credential']['password']}"
        return grant

    def heartbeat(self, load: int) -> dict[str, Any]:
        return self.call("/transcoders/heartbeat", {"load": load}, retry_s=0.0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class NodeJobs:
    """The job-table operations of a transcode task, through the node API."""

    def __init__(self, node: NodeClient) -> None:
        self.node = node

    def start_attempt(
        self,
        job_id: str,
        task_id: str,
        worker: str,
        instance: str | None = None,
        max_attempts: int | None = None,
        run_timeout_s: float = 60.0,
    ) -> StartOutcome:
        # The node decides the instance, the attempt limit and the deadline itself.
        got = self.node.call(
            f"/transcoders/jobs/{job_id}/claim", {"task_id": task_id, "worker": worker}
        )
        return StartOutcome(str(got["status"]), int(got["attempts"]))

    def complete(
        self,
        job_id: str,
        task_id: str,
        worker: str,
        result: dict[str, Any],
        timings: dict[str, Any] | None = None,
    ) -> bool:
        body = {"task_id": task_id, "worker": worker, "result": result, "timings": timings}
        return bool(self.node.call(f"/transcoders/jobs/{job_id}/complete", body)["won"])

    def attempt_failed(
        self, job_id: str, task_id: str, worker: str, code: str, error: str, *, final: bool
    ) -> bool:
        body = {"task_id": task_id, "worker": worker, "code": code, "error": error, "final": final}
        return bool(self.node.call(f"/transcoders/jobs/{job_id}/fail", body)["recorded"])

    def last_error(self, job_id: str) -> str | None:
        got = self.node.request("GET", f"/transcoders/jobs/{job_id}/last-error", retry_s=20.0)
        error = got.json().get("error")
        return str(error) if error is not None else None


class NodeBlobs:
    """A job's input and renditions, through short-lived signed URLs from the node."""

    def __init__(self, node: NodeClient) -> None:
        self.node = node
        self.url = node.base_url + "/blobs"

    def _signed(self, method: str, key: str) -> str:
        job_id = key.split("/")[1] if key.startswith("jobs/") else ""
        body = {"job_id": job_id, "method": method, "key": key}
        return str(self.node.call("/transcoders/sign", body)["url"])

    def get(self, key: str) -> bytes:
        return self.node.request("GET", self._signed("GET", key), retry_s=20.0).content

    def put(self, key: str, data: bytes) -> None:
        self.node.request("PUT", self._signed("PUT", key), content=data, retry_s=20.0)


@dataclass
class RemoteStores:
    """What a remote transcoder's tasks use in place of :class:`~farm.resources.Resources`."""

    settings: ClusterSettings
    jobs: NodeJobs
    blobs: NodeBlobs
    writers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=8, thread_name_prefix="farm-write")
    )

    def announce(
        self, channel: Any, job_id: str, state: str, result: dict[str, Any] | None = None
    ) -> None:
        """Nothing: the node tells the job's submitter when it records the outcome."""
