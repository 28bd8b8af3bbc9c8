"""Request bodies read under a cap, for the node API's routes that read their own body."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

__all__ = ["read_capped"]


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
