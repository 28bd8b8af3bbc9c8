"""Request bodies read under a size cap: refused (413) before they are read in full.

Routes that read their body themselves use :func:`read_body` or :func:`stream_body`; routers
whose bodies FastAPI parses into a model pass :data:`JSON_LIMIT` as their ``max_body_size``.
Every body, however it is read, arrives under :class:`BodyTimeout`. Also the shapes of what
callers may put in paths and text fields the database stores.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Callable
from typing import Annotated

import anyio
from fastapi import Path, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BadRequest, UploadTooLarge

__all__ = ["JSON_LIMIT", "PRINTABLE", "BodyTimeout", "SessionId", "read_body", "stream_body"]

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]+")
#: JSON bodies (prompts, chat histories, task and admin requests) are small; larger: 413.
JSON_LIMIT = 8 * 1024 * 1024
#: Text without control characters (PostgreSQL refuses NUL in a text column).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
#: ``<key id>:<manifestID>``, ``stream:<manifestID>`` or ``ai:<request id>`` (see the routes).
SessionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_:-]{1,128}$")]


async def stream_body(
    request: Request, limit: int, too_large: str | None = None
) -> AsyncGenerator[bytes, None]:
    """The body's chunks, raising UploadTooLarge (``too_large`` or a size message) as soon
    as the declared or received size passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise BadRequest("Content-Length must be a number")
        if int(declared) > limit:
            raise UploadTooLarge(
                too_large or f"body of {declared} bytes exceeds the {limit}-byte limit"
            )
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(too_large or f"body exceeds the {limit}-byte limit")
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes before reading it all."""
    return b"".join([chunk async for chunk in stream_body(request, limit)])


class BodyTimeout:
    """ASGI middleware: a request whose body stops arriving for ``seconds`` is answered 408.

    The wait is measured from each read of the body to the next part of it, so a large
    upload that keeps coming is never cut off, and one that stalls (a declared size that is
    never sent) ends within ``seconds`` rather than when the server's own timeouts, if any,
    run out. The route sees the client as gone; its answer is replaced by ``answer(scope,
    message)``, the gateway's error shape for that route.
    """

    def __init__(
        self, app: ASGIApp, seconds: float, answer: Callable[[Scope, str], Response]
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = timed_out = started = False

        async def receive_body() -> Message:
            nonlocal body_done, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if body_done:  # after the body the app only waits for a disconnect: unbounded
                return await receive()
            try:
                with anyio.fail_after(self.seconds):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                return {"type": "http.disconnect"}
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def send_answer(message: Message) -> None:
            nonlocal started
            if timed_out and not started:
                return  # the app's answer to a body that never came: replaced below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_body, send_answer)
        except Exception:
            if not (timed_out and not started):
                raise
        if timed_out and not started:
            log.info(
                "%s %s: no body received for %g s; answered 408",
                scope.get("method"),
                scope.get("path"),
                self.seconds,
            )
            response = self.answer(
                scope, f"the request body did not arrive within {self.seconds:g} s"
            )
            response.headers["Connection"] = "close"
            await response(scope, receive_body, send)
