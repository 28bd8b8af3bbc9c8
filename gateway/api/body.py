"""Request bodies read under a size cap: refused (413) before they are read in full."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request

from gateway.errors import BadRequest, PayloadTooLarge

__all__ = ["read_body", "stream_body"]


async def stream_body(
    request: Request, limit: int, too_large: str | None = None
) -> AsyncGenerator[bytes, None]:
    """The body's chunks, raising PayloadTooLarge (``too_large`` or a size message) as soon
    as the declared or received size passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
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
