"""Studio-style file transcoding and the session log."""

from __future__ import annotations

import mimetypes
import re
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from farm.blobstore import BlobMissing
from farm.errors import ProfileInvalid
from farm.media.profiles import profiles_from_json
from gateway.api.body import JSON_LIMIT, SessionId
from gateway.api.responses import errors
from gateway.auth import KeyCaller, state_of
from gateway.errors import BadRequest, NotFound, RangeNotSatisfiable
from gateway.playback import TOKEN_PATTERN, PlaybackSigner, with_playback_urls
from gateway.studio_jobs import StudioJobRunner

__all__ = ["router"]

router = APIRouter(prefix="/api", max_body_size=JSON_LIMIT)
#: Task ids are hex (``StudioJobRunner.create``); anything else is refused before the database.
TaskId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]
PlaybackToken = Annotated[str, Path(pattern=TOKEN_PATTERN)]
_OUTPUT_PATH = re.compile(r"(hls|mp4)/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")
#: One byte range (``bytes=first-last``, ``bytes=first-``, ``bytes=-suffix``).
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
#: A player's ``Range`` header (MP4 in a browser's video element asks for ranges).
ByteRange = Annotated[str | None, Header(alias="Range")]
_OUTPUT_TYPES = {
    "description": "A playlist, an MPEG-TS segment or an MP4.",
    "content": {
        t: {"schema": {"type": "string", "format": "binary"}}
        for t in ("application/vnd.apple.mpegurl", "video/MP2T", "video/mp4")
    },
}


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://", max_length=8192)

    @field_validator("url")
    @classmethod
    def _parses(cls, v: str) -> str:
        # Refused here, not by the fetch after the task was accepted (a host IDNA refuses).
        try:
            httpx.URL(v)
        except httpx.InvalidURL as e:
            raise ValueError(f"not a valid URL: {e}") from None
        return v


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
        # None or [] (as in Studio): the gateway's default ladder.
        if v:
            try:
                profiles_from_json(v)
            except ProfileInvalid as e:
                raise ValueError(str(e)) from e
        return v


def _runner(request: Request) -> StudioJobRunner:
    runner: StudioJobRunner = request.app.state.studio_jobs
    return runner


_KEY = (401, 429, 503)


@router.post("/transcode", responses=errors(400, 402, 413, *_KEY))
def create_task(body: TranscodeRequest, caller: KeyCaller, request: Request) -> dict[str, Any]:
    """Create a file transcoding task."""
    state, runner = state_of(request), _runner(request)
    assert caller.key_id is not None
    if body.storage is not None:
        raise BadRequest("external storage is not supported: outputs are served by the gateway")
    params = body.model_dump(mode="json")
    return runner.create(caller.key_id, params, state.settings.max_concurrent_tasks)


@router.get("/task/{task_id}", responses=errors(400, 404, *_KEY))
def get_task(task_id: TaskId, caller: KeyCaller, request: Request) -> dict[str, Any]:
    """A task's phase, progress and outputs, with playback URLs that need no API key."""
    task = _runner(request).get(task_id, caller.key_id)
    return with_playback_urls(task, PlaybackSigner.from_settings(state_of(request).settings))


@router.get(
    "/task/{task_id}/output/{path:path}",
    response_class=Response,
    responses={200: _OUTPUT_TYPES, 206: _OUTPUT_TYPES, **errors(400, 404, 416, *_KEY)},
)
def task_output(
    task_id: TaskId, path: str, caller: KeyCaller, request: Request, byte_range: ByteRange = None
) -> Response:
    """One output file of a completed task (playlists, segments, MP4s)."""
    _runner(request).get(task_id, caller.key_id)  # 404 unless the caller owns it
    return _output(request, task_id, path, byte_range)


@router.get(
    "/task/{task_id}/play/{token}/{path:path}",
    response_class=Response,
    responses={200: _OUTPUT_TYPES, 206: _OUTPUT_TYPES, **errors(400, 403, 404, 416, 503)},
)
def play(
    task_id: TaskId,
    token: PlaybackToken,
    path: str,
    request: Request,
    byte_range: ByteRange = None,
) -> Response:
    """One output file for a player: the playback URL's token stands in for the API key."""
    PlaybackSigner.from_settings(state_of(request).settings).check(task_id, token)
    # Players load playlists and segments from web pages of other origins (hls.js).
    return _output(request, task_id, path, byte_range, {"Access-Control-Allow-Origin": "*"})


def _output(
    request: Request,
    task_id: str,
    path: str,
    byte_range: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    if not _OUTPUT_PATH.fullmatch(path) or ".." in path:
        raise NotFound(f"no output {path!r}")
    try:
        data = state_of(request).blobs.get(f"tasks/{task_id}/{path}")
    except BlobMissing:
        raise NotFound(f"no output {path!r}") from None
    media = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/MP2T"}.get(
        path[path.rfind(".") :], mimetypes.guess_type(path)[0] or "application/octet-stream"
    )
    headers = {**(headers or {}), "Accept-Ranges": "bytes"}
    span = _span(byte_range, len(data))
    if span is None:
        return Response(data, media_type=media, headers=headers)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return Response(data[start : end + 1], status_code=206, media_type=media, headers=headers)


def _span(byte_range: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a ``Range`` header asks for; None for the whole file (no
    header, or one this server ignores, as RFC 9110 lets it: several ranges, other units)."""
    match = _RANGE.fullmatch(byte_range.strip()) if byte_range else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - int(last)), size - 1
    start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable(size)
    if start > end:
        return None  # an invalid range is ignored
    return start, end


@router.get("/sessions/{session_id}", responses=errors(400, 404, *_KEY))
def get_session(session_id: SessionId, caller: KeyCaller, request: Request) -> dict[str, Any]:
    """A session's attempt log: orchestrator, latency, error and price of every attempt."""
    session = state_of(request).sessions.get(session_id)
    if session["key_id"] != caller.key_id:
        raise NotFound(f"no session {session_id!r}")
    return session


@router.get("/ticket-params", responses=errors(400, 404, 429, 503))
def ticket_params(sender: str, request: Request) -> dict[str, Any]:
    """Ticket params and price for paying jobs with Livepeer tickets (ETH deposit)."""
    state = state_of(request)
    if state.eth is None:
        raise NotFound("this gateway takes no ticket payments (no chain configured)")
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", sender):
        raise BadRequest("sender must be a 0x-prefixed 20-byte address")
    state.limiter.hit(f"params:{sender.lower()}")
    return state.eth.ticket_params(bytes.fromhex(sender[2:]))


@router.get("/me", responses=errors(*_KEY))
def me(caller: KeyCaller, request: Request) -> dict[str, Any]:
    """The calling key's balance."""
    assert caller.key_id is not None
    info = state_of(request).ledger.key(caller.key_id)
    return {"id": info.id, "name": info.name, "balance": info.balance}
