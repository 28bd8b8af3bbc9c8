"""Request bodies read under a size cap: refused (413) before they are read in full.

Routes that read their body themselves use :func:`read_body` or :func:`stream_body`; routers
whose bodies FastAPI parses into a model pass :data:`JSON_LIMIT` as their ``max_body_size``.
Also the shapes of what callers may put in paths and text fields the database stores.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import Path, Request

from gateway.errors import BadRequest, PayloadTooLarge

__all__ = ["JSON_LIMIT", "PRINTABLE", "SessionId", "read_body", "stream_body"]

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
    """The body's chunks, raising PayloadTooLarge (``too_large`` or a size message) as soon
    as the declared or received size passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise BadRequest("Content-Length must be a number")
        if int(declared) > limit:
            raise PayloadTooLarge(
                too_large or f"body of {declared} bytes exceeds the {limit}-byte limit"
            )
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large or f"body exceeds the {limit}-byte limit")
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes before reading it all."""
    return b"".join([chunk async for chunk in stream_body(request, limit)])
