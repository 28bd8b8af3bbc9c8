"""Studio jobs: file transcoding as Livepeer Studio's ``/api/transcode`` and ``/api/task``
run it: fetch, split, transcode segments in parallel, assemble.

A job moves pending -> waiting (fetching and splitting the input) -> running (segments out
on the pool; progress is the share done) -> completed or failed. Outputs are an HLS ladder
(master and media playlists) and one MP4 per rendition, kept in the gateway's blob store.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, insert, select, update

from farm.errors import FarmError
from farm.media.assemble import concat_mp4, hls
from farm.media.profiles import VideoProfile, profiles_from_json
from farm.media.segmenter import SourceSegment, split
from farm.protocol import SafeFetcher
from farm.runtime import utcnow
from gateway.dispatch import Segment, SegmentOutcome
from gateway.errors import (
    AuthFailed,
    BadRequest,
    InsufficientCredit,
    NotFound,
    RateLimited,
    UploadTooLarge,
)
from gateway.models import ApiKey, StudioJob
from gateway.payments import CreditPayment
from gateway.pricing import charge, estimate_pixels
from gateway.state import GatewayState

__all__ = ["StudioJobRunner"]

log = logging.getLogger(__name__)

#: The phases of a job that is not over (counted against a key's cap).
_ACTIVE = ("pending", "waiting", "running")


class StudioJobRunner:
    """Runs Studio jobs on a thread pool; their state lives in the gateway's database."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.engine = state.ledger.engine
        self._jobs = ThreadPoolExecutor(state.settings.task_workers, "gateway-studio-job")
        self._segments = ThreadPoolExecutor(
            max(4, state.settings.task_workers * 2), "gateway-segment"
        )
        self._http = SafeFetcher(state.settings.fetch_policy())
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._interrupted()

    def _interrupted(self) -> None:
        # Jobs that were running when the gateway stopped cannot resume: say so.
        with self.engine.begin() as conn:
            conn.execute(
                update(StudioJob)
                .where(StudioJob.phase.in_(_ACTIVE))
                .values(
                    phase="failed",
                    error="the gateway restarted during the task",
                    updated_at=utcnow(),
                )
            )

    # -- API -------------------------------------------------------------------------------
    def create(self, key_id: str, params: dict[str, Any], cap: int) -> dict[str, Any]:
        """Record and start a job for ``key_id``: 402 when the key has no credit (and work
        is priced), 429 when it already runs ``cap`` jobs, both decided atomically."""
        job_id = uuid.uuid4().hex[:16]
        now = utcnow()
        price, _ = self.state.dispatcher.max_price()  # 503 now when nothing could run it
        with self.engine.begin() as conn:
            # A no-op write to the key's row first: it locks the row (PostgreSQL) or the
            # database (SQLite) until the job is inserted, so that concurrent requests of one
            # key take turns here and none counts the others' jobs too early.
            key = conn.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .values(balance=ApiKey.balance)
                .returning(ApiKey.balance, ApiKey.revoked_at)
            ).first()
            if key is None or key.revoked_at is not None:
                raise AuthFailed("API key revoked")
            if key.balance <= 0 and price > 0:
                raise InsufficientCredit("insufficient credit: the key's balance is 0")
            active = conn.execute(
                select(func.count())
                .select_from(StudioJob)
                .where(StudioJob.key_id == key_id, StudioJob.phase.in_(_ACTIVE))
            ).scalar_one()
            if active >= cap:
                raise RateLimited(f"at most {cap} running tasks per key", retry_after=30.0)
            conn.execute(
                insert(StudioJob).values(
                    id=job_id,
                    key_id=key_id,
                    phase="pending",
                    progress=0.0,
                    params=params,
                    created_at=now,
                    updated_at=now,
                )
            )
        future = self._jobs.submit(self._run, job_id, key_id, params)
        with self._lock:
            self._running[job_id] = future
        future.add_done_callback(lambda _: self._forget(job_id))
        stamp = int(now.timestamp() * 1000)
        return {
            "id": job_id,
            "type": "transcode-file",
            "createdAt": stamp,
            "params": params,
            "status": {
                "phase": "pending",
                "progress": 0.0,
                "updatedAt": stamp,
                "errorMessage": None,
            },
            "output": None,
        }

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._running.pop(job_id, None)

    def get(self, job_id: str, key_id: str | None) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(StudioJob).where(StudioJob.id == job_id)).first()
        if row is None or (key_id is not None and row.key_id != key_id):
            raise NotFound(f"no task {job_id!r}")
        return {
            "id": row.id,
            "type": "transcode-file",
            "createdAt": int(row.created_at.timestamp() * 1000),
            "params": row.params,
            "status": {
                "phase": row.phase,
                "progress": round(row.progress, 4),
                "updatedAt": int(row.updated_at.timestamp() * 1000),
                "errorMessage": row.error,
            },
            "output": row.output,
        }

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        with self._lock:
            future = self._running.get(job_id)
        if future is not None:
            future.result(timeout)

    def close(self) -> None:
        self._jobs.shutdown(wait=False, cancel_futures=True)
        self._segments.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # -- the work --------------------------------------------------------------------------
    def _set(self, job_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(StudioJob)
                .where(StudioJob.id == job_id)
                .values(updated_at=utcnow(), **values)
            )

    def _run(self, job_id: str, key_id: str, params: dict[str, Any]) -> None:
        try:
            self._set(job_id, phase="waiting")
            data = self._fetch(params["input"]["url"])
            profiles = (
                profiles_from_json(params["profiles"])
                if params.get("profiles")
                else self.state.default_profiles
            )
            output = self._transcode(job_id, key_id, data, profiles, params)
            self._set(job_id, phase="completed", progress=1.0, output=output)
        except (FarmError, OSError, ValueError) as e:
            log.info("Studio job %s failed: %s", job_id, e)  # the caller's input: not our fault
            self._set(job_id, phase="failed", error=str(e)[:2000])
        except Exception as e:
            log.exception("Studio job %s crashed", job_id)
            self._set(job_id, phase="failed", error=f"internal error: {e.__class__.__name__}")

    def _fetch(self, url: str) -> bytes:
        limit = self.state.settings.max_task_input_bytes
        chunks, size = [], 0
        with self._http.stream(url) as response:
            if response.status_code != 200:
                raise BadRequest(f"input URL answered HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(f"input exceeds the {limit}-byte limit")
                chunks.append(chunk)
        return b"".join(chunks)

    def _transcode(
        self,
        job_id: str,
        key_id: str,
        data: bytes,
        profiles: list[VideoProfile],
        params: dict[str, Any],
    ) -> dict[str, Any]:
        # Where the pool has a farm cluster, its engine takes the segments no Livepeer
        # orchestrator can: codecs go-livepeer does not decode, an input shown turned (which
        # the engine turns upright, so every output comes back upright) and segments cut at
        # open-GOP keyframes (which carry the GOP before them). Elsewhere such codecs are
        # refused, a turned input's HLS stays as coded, and cuts are at clean keyframes.
        segments = split(
            data,
            float(params.get("targetSegmentSizeSecs") or 6.0),
            engine=self.state.dispatcher.pool.has_clusters(),
        )
        # Priced by the segments as split (their timestamps and frames), and charged in full.
        margin = self.state.settings.estimate_margin
        price, per = self.state.dispatcher.max_price()
        reserve = charge(
            sum(estimate_pixels(profiles, s.duration, margin, s.frames) for s in segments),
            price,
            per,
        )
        ref = f"task:{job_id}"
        session_id = f"task:{job_id}"
        self.state.sessions.open(session_id, "task", key_id)
        futures: list[Future[SegmentOutcome]] = []
        with CreditPayment(self.state.ledger, key_id).hold(ref, reserve) as hold:
            try:
                self._set(job_id, phase="running", progress=0.0)
                futures += [
                    self._segments.submit(
                        self.state.dispatcher.run,
                        Segment(
                            session_id,
                            s.index,
                            s.data,
                            profiles,
                            s.duration,
                            engine_only=s.engine_only,
                            show_from=s.show_from,
                        ),
                    )
                    for s in segments
                ]
                outcomes: list[SegmentOutcome] = []
                for done, future in enumerate(futures, start=1):
                    outcomes.append(future.result())
                    self._set(job_id, progress=0.95 * done / len(segments))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            hold.actual = sum(o.cost for o in outcomes)
        charged = hold.charged
        return self._store(job_id, segments, profiles, outcomes, params, charged)

    def _store(
        self,
        job_id: str,
        segments: list[SourceSegment],
        profiles: list[VideoProfile],
        outcomes: list[SegmentOutcome],
        params: dict[str, Any],
        charged: int,
    ) -> dict[str, Any]:
        per_profile: dict[str, list[tuple[str, bytes, float]]] = {p.name: [] for p in profiles}
        for seg, outcome in zip(segments, outcomes, strict=True):
            for ref, data in outcome.renditions:
                per_profile[ref.name].append((f"{seg.index}.ts", data, ref.duration))
        base = f"/api/task/{job_id}/output"
        output: dict[str, Any] = {"charged": charged, "segments": len(segments)}
        outputs = params.get("outputs") or {"hls": {"path": "hls"}, "mp4": {"path": "mp4"}}
        if "hls" in outputs:
            for path, blob in hls(per_profile).items():
                self.state.blobs.put(f"tasks/{job_id}/hls/{path}", blob)
            output["hls"] = {"url": f"{base}/hls/index.m3u8"}
        if "mp4" in outputs:
            output["mp4"] = []
            for p in profiles:
                blob = concat_mp4(
                    [data for _, data, _ in per_profile[p.name]],
                    rotation=segments[0].rotation if segments else 0,
                )
                self.state.blobs.put(f"tasks/{job_id}/mp4/{p.name}.mp4", blob)
                output["mp4"].append(
                    {"name": p.name, "url": f"{base}/mp4/{p.name}.mp4", "bytes": len(blob)}
                )
        return output
