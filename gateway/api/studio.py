"""Studio-style file transcoding and the session log."""

from __future__ import annotations

import mimetypes
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from farm.blobstore import BlobMissing
from farm.errors import ProfileInvalid
from farm.media.profiles import profiles_from_json
from gateway.api.body import JSON_LIMIT, SessionId
from gateway.auth import KeyCaller, state_of
from gateway.errors import BadRequest, NotFound
from gateway.tasks import TaskRunner

__all__ = ["router"]

router = APIRouter(prefix="/api", max_body_size=JSON_LIMIT)
#: Task ids are hex (``TaskRunner.create``); anything else is refused before the database.
TaskId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]
_OUTPUT_PATH = re.compile(r"(hls|mp4)/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://", max_length=8192)


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field("/", max_length=1024)


def _both_outputs() -> dict[Literal["hls", "mp4"], OutputSpec]:
    return {"hls": OutputSpec(), "mp4": OutputSpec()}


class TranscodeRequest(BaseModel):
    """Livepeer Studio's transcode request, with outputs kept by the gateway."""

    model_config = ConfigDict(extra="forbid")
    input: InputSpec
    #: At least one: a task that keeps nothing would spend credit for no output.
    outputs: dict[Literal["hls", "mp4"], OutputSpec] = Field(
        default_factory=_both_outputs, min_length=1
    )
    profiles: list[dict[str, Any]] | None = None
    targetSegmentSizeSecs: float | None = Field(None, ge=1, le=60)
    storage: dict[str, Any] | None = None

    @field_validator("profiles")
    @classmethod
    def _valid_profiles(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v is not None:
            try:
                profiles_from_json(v)
            except ProfileInvalid as e:
                raise ValueError(str(e)) from e
        return v


def _runner(request: Request) -> TaskRunner:
    runner: TaskRunner = request.app.state.tasks
    return runner


@router.post("/transcode")
def create_task(body: TranscodeRequest, caller: KeyCaller, request: Request) -> dict[str, Any]:
    """Create a file transcoding task."""
    state, runner = state_of(request), _runner(request)
    assert caller.key_id is not None
    if body.storage is not None:
        raise BadRequest("external storage is not supported: outputs are served by the gateway")
    params = body.model_dump(mode="json")
    return runner.create(caller.key_id, params, state.settings.max_concurrent_tasks)


@router.get("/task/{task_id}")
def get_task(task_id: TaskId, caller: KeyCaller, request: Request) -> dict[str, Any]:
    """A task's phase, progress and outputs."""
    return _runner(request).get(task_id, caller.key_id)


@router.get("/task/{task_id}/output/{path:path}")
def task_output(task_id: TaskId, path: str, caller: KeyCaller, request: Request) -> Response:
    """One output file of a completed task (playlists, segments, MP4s)."""
    _runner(request).get(task_id, caller.key_id)  # 404 unless the caller owns it
    if not _OUTPUT_PATH.fullmatch(path) or ".." in path:
        raise NotFound(f"no output {path!r}")
    try:
        data = state_of(request).blobs.get(f"tasks/{task_id}/{path}")
    except BlobMissing:
        raise NotFound(f"no output {path!r}") from None
    media = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/MP2T"}.get(
        path[path.rfind(".") :], mimetypes.guess_type(path)[0] or "application/octet-stream"
    )
    return Response(data, media_type=media)


@router.get("/sessions/{session_id}")
def get_session(session_id: SessionId, caller: KeyCaller, request: Request) -> dict[str, Any]:
    """A session's attempt log: orchestrator, latency, error and price of every attempt."""
    session = state_of(request).log.get(session_id)
    if session["key_id"] != caller.key_id:
        raise NotFound(f"no session {session_id!r}")
    return session


@router.get("/ticket-params")
def ticket_params(sender: str, request: Request) -> dict[str, Any]:
    """Ticket params and price for paying jobs with Livepeer tickets (ETH deposit)."""
    state = state_of(request)
    if state.eth is None:
        raise NotFound("this gateway takes no ticket payments (no chain configured)")
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", sender):
        raise BadRequest("sender must be a 0x-prefixed 20-byte address")
    state.limiter.hit(f"params:{sender.lower()}")
    return state.eth.ticket_params(bytes.fromhex(sender[2:]))


@router.get("/me")
def me(caller: KeyCaller, request: Request) -> dict[str, Any]:
    """The calling key's balance."""
    assert caller.key_id is not None
    info = state_of(request).ledger.key(caller.key_id)
    return {"id": info.id, "name": info.name, "balance": info.balance}
