"""Request bodies read under a cap, for the node API's routes that read their own body."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request

__all__ = ["DRAIN_BYTES", "drain", "read_capped"]

#: What a refusal reads of a body it did not want before answering, as Go's HTTP server does
#: after a handler: a connection whose body was read whole can carry the client's next request;
#: one with more unread is closed, mid-upload, which costs the client a new TLS handshake.
DRAIN_BYTES = 256 * 1024
#: How long a refusal waits for those bytes.
DRAIN_S = 2.0


async def read_capped(
    request: Request,
    cap: int,
    too_large: Callable[[str], Exception],
    on_chunk: Callable[[bytes], object] | None = None,
) -> bytes:
    """The request's body; ``too_large(message)`` is raised as soon as it is known to pass
    ``cap`` bytes, by its Content-Length or while it streams, before the rest is held.
    ``on_chunk`` sees each chunk as it arrives (a hash taken while the body streams in)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > cap):
        raise too_large(f"the body of {declared} bytes is over the {cap}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if on_chunk is not None:
            on_chunk(chunk)
        if len(body) > cap:
            raise too_large(f"the body is over the {cap}-byte limit")
    return bytes(body)


async def drain(request: Request, limit: int = DRAIN_BYTES) -> None:
    """Read and discard what is left of the request's body, unless it declares or passes
    ``limit`` bytes or takes over ``DRAIN_S``; nothing when the body was read already."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        return
    read = 0
    with contextlib.suppress(TimeoutError, ClientDisconnect, RuntimeError):  # RuntimeError: read
        async with asyncio.timeout(DRAIN_S):
            async for chunk in request.stream():
                read += len(chunk)
                if read > limit:
                    return
