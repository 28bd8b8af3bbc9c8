"""go-livepeer-compatible AI routes: ``POST /text-to-image``, ``/llm``, ``/upscale`` ...

Each request is authorised like a video job (API key, Livepeer tickets or the auth webhook),
validated, priced in Livepeer's units, held against the caller's credit, run on the pool with
go-livepeer's AI retry loop, and answered in ai-runner's response shape with result media
re-hosted by the gateway. Errors use go-livepeer's AI body, ``{"error": {"message": ...}}``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from farm.blobstore import BlobMissing
from farm.errors import FarmError
from gateway import metrics
from gateway.ai.errors import livepeer_error_body
from gateway.ai.pipelines import PIPELINES, Pipeline
from gateway.ai.pricing import Bill
from gateway.ai.requests import AIRequest, read_ai_request, read_json_object
from gateway.ai.results import MEDIA_NAME, MEDIA_ROUTE, media_type
from gateway.ai.sending import AIStream
from gateway.ai.service import AIService
from gateway.api.responses import errors
from gateway.auth import Caller, authorise, state_of
from gateway.errors import BadRequest, NotFound, http_status
from gateway.payments import Hold

__all__ = ["LivepeerAIRoute", "is_ai_route", "router"]


class LivepeerAIRoute(APIRoute):
    """A route whose errors take go-livepeer's AI body (see :func:`is_ai_route`)."""


router = APIRouter(route_class=LivepeerAIRoute, tags=["ai"])
#: AI jobs may be paid by an API key, by tickets or vouched for by the auth webhook.
_OPTIONAL_KEY: dict[str, Any] = {"security": [{"apiKey": []}, {}]}
_JOB_ERRORS = errors(400, 401, 402, 403, 413, 429, 503, ai=True)
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def is_ai_route(request: Request) -> bool:
    """Whether the request was routed to an AI route (its errors use the AI body)."""
    return isinstance(request.scope.get("route"), LivepeerAIRoute)


def _service(request: Request) -> AIService:
    service: AIService = request.app.state.ai
    return service


class _Job:
    """One AI request on its way: caller, validated request, bill and ids."""

    def __init__(self, request: Request, caller: Caller, req: AIRequest, bill: Bill) -> None:
        self.service = _service(request)
        self.caller = caller
        self.req = req
        self.bill = bill
        self.request_id = uuid.uuid4().hex
        self.session_id = f"ai:{self.request_id}"
        self.started = time.monotonic()
        self.service.state.sessions.open(self.session_id, "ai", caller.key_id)
        metrics.ai_requested(req.pipeline.name, req.model_id, bill.price[0] / max(1, bill.price[1]))

    def run(self, hold: Hold) -> dict[str, Any]:
        """Dispatch, set what the hold settles at, and return the response body."""
        try:
            outcome = self.service.sender.run(self.session_id, self.request_id, self.req, self.bill)
        except FarmError as e:
            self.done(e)
            raise
        hold.actual = self.bill.cost
        self.done()
        return outcome.response

    def run_held(self) -> tuple[dict[str, Any], int]:
        """Hold the cost, run, settle; the response body and what was charged."""
        with self.service.held(self.caller, self.session_id, self.bill.cost) as hold:
            response = self.run(hold)
        return response, hold.charged

    def done(self, error: FarmError | None = None) -> None:
        code = "" if error is None else error.code
        metrics.ai_done(
            self.req.pipeline.name, self.req.model_id, time.monotonic() - self.started, code
        )

    def headers(self, charged: int | None = None) -> dict[str, str]:
        headers = {"Livepeer-Session": self.session_id}
        if charged is not None:
            headers["Livepeer-Charged"] = str(charged)
        return headers


async def _accept(request: Request, pipeline: Pipeline) -> _Job:
    state = state_of(request)
    caller, _ = await run_in_threadpool(authorise, state, request)
    req = await read_ai_request(request, pipeline, state.settings.max_upload_bytes)
    return await run_in_threadpool(_Job, request, caller, req, _service(request).bill(req))


def _route(pipeline: Pipeline) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        job = await _accept(request, pipeline)
        response, charged = await run_in_threadpool(job.run_held)
        return JSONResponse(response, headers=job.headers(charged))

    handle.__doc__ = f"Livepeer AI {pipeline.name} ({pipeline.body} body)."
    return handle


for _name in (
    "text-to-image",
    "image-to-image",
    "upscale",
    "audio-to-text",
    "segment-anything-2",
    "image-to-text",
    "text-to-speech",
):
    router.add_api_route(
        f"/{_name}",
        _route(PIPELINES[_name]),
        methods=["POST"],
        name=_name,
        response_model=None,
        responses=_JOB_ERRORS,
        openapi_extra={**PIPELINES[_name].openapi_body(), **_OPTIONAL_KEY},
    )


@router.post(
    "/image-to-video",
    response_model=None,
    responses={202: {"description": "Accepted (Prefer: respond-async)"}, **_JOB_ERRORS},
    openapi_extra={**PIPELINES["image-to-video"].openapi_body(), **_OPTIONAL_KEY},
)
async def image_to_video(request: Request) -> Response:
    """Livepeer AI image-to-video; ``Prefer: respond-async`` answers 202 with a request id."""
    job = await _accept(request, PIPELINES["image-to-video"])
    if request.headers.get("prefer", "").strip().lower() != "respond-async":
        response, charged = await run_in_threadpool(job.run_held)
        return JSONResponse(response, headers=job.headers(charged))
    hold, stack = await run_in_threadpool(
        job.service.hold_now, job.caller, job.session_id, job.bill.cost
    )
    await run_in_threadpool(
        job.service.start_async, job.request_id, job.req, stack, lambda: job.run(hold)
    )
    return JSONResponse({"request_id": job.request_id}, 202, headers=job.headers())


@router.post(
    "/image-to-video/result",
    response_model=None,
    responses={202: {"description": "Still processing"}, **errors(400, 413, ai=True)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}
                        },
                        "required": ["request_id"],
                    }
                }
            },
        }
    },
)
async def image_to_video_result(request: Request) -> Response:
    """The state of a ``Prefer: respond-async`` image-to-video request."""
    request_id = (await read_json_object(request)).get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise BadRequest("invalid request ID")
    try:
        result = await run_in_threadpool(_service(request).async_state, request_id)
    except KeyError:
        raise BadRequest("invalid request ID") from None
    if result is None:
        return JSONResponse({"status": "processing"}, 202)
    return JSONResponse({"status": "complete", "result": result})


@router.post(
    "/llm",
    response_model=None,
    responses={
        200: {
            "description": "The completion, or server-sent events with stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **_JOB_ERRORS,
    },
    openapi_extra={**PIPELINES["llm"].openapi_body(), **_OPTIONAL_KEY},
)
async def llm(request: Request) -> Response:
    """Livepeer AI llm; ``"stream": true`` answers server-sent events."""
    job = await _accept(request, PIPELINES["llm"])
    if not job.req.params["stream"]:
        response, charged = await run_in_threadpool(job.run_held)
        return JSONResponse(response, headers=job.headers(charged))
    hold, stack, stream = await run_in_threadpool(_open_stream, job)
    events = _events(job, hold, stack, stream)
    # Started here, so the hold is settled even if the client leaves before the response
    # starts (closing a generator that never ran would skip its cleanup).
    first = next(events)
    return StreamingResponse(
        itertools.chain([first], events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", **job.headers()},
    )


def _open_stream(job: _Job) -> tuple[Hold, ExitStack, AIStream]:
    hold, stack = job.service.hold_now(job.caller, job.session_id, job.bill.cost)
    with stack:
        try:
            stream = job.service.sender.stream(job.session_id, job.req, job.bill)
        except FarmError as e:
            job.done(e)
            raise
        return hold, stack.pop_all(), stream


def _events(job: _Job, hold: Hold, stack: ExitStack, stream: AIStream) -> Iterator[bytes]:
    with stack:
        try:
            yield _sse(stream.first)
            for event in stream.rest:
                yield _sse(event)
        except GeneratorExit:
            pass  # the client left; what was generated is paid for
        except FarmError as e:
            # Headers are gone: the failure can only be told as a last event.
            job.done(e)
            yield _sse(livepeer_error_body(http_status(e), str(e)))
            return
        hold.actual = job.bill.cost
        job.done()


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


@router.get(
    MEDIA_ROUTE + "/{request_id}/{name}",
    response_class=Response,
    responses={
        200: {
            "description": "The file",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **errors(404, ai=True),
    },
)
def ai_media(request_id: str, name: str, request: Request) -> Response:
    """A result file of an AI request (images, videos, audio), as its response linked it."""
    if not _REQUEST_ID.fullmatch(request_id) or not MEDIA_NAME.fullmatch(name):
        raise NotFound("no such media")
    try:
        data = state_of(request).blobs.get(f"ai/{request_id}/{name}")
    except BlobMissing:
        raise NotFound("no such media") from None
    return Response(data, media_type=media_type(name))
