"""gRPC next to HTTPS on one port: an ASGI layer in front of the node API.

As on go-livepeer's orchestrator, requests whose content type is ``application/grpc*`` are gRPC
and everything else goes to the HTTP app. Two services are served: go-livepeer's
``net.Transcoder/RegisterTranscoder``, a server stream (the transcoder sends one
``RegisterRequest`` and then receives ``NotifySegment`` messages for as long as it stays), and
the unary ``net.Orchestrator`` calls a gateway makes (farm.orchestrator).
The server (hypercorn) must speak HTTP/2 and the ASGI ``http.response.trailers`` extension.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import redis
from google.protobuf.message import DecodeError

from farm.golivepeer import net_pb2
from farm.golivepeer.hub import Attached, Hub
from farm.golivepeer.records import host_of
from farm.golivepeer.wire import (
    DEFAULT_CAPABILITIES,
    FrameError,
    MessageReader,
    capability_bits,
    frame,
)

if TYPE_CHECKING:
    from google.protobuf.message import Message as Proto

    from farm.orchestrator import Orchestrator

__all__ = ["ORCHESTRATOR_PREFIX", "REGISTER_PATH", "GrpcMount", "Status"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_M = TypeVar("_M", bound="Proto")

REGISTER_PATH = "/net.Transcoder/RegisterTranscoder"
ORCHESTRATOR_PREFIX = "/net.Orchestrator/"
#: A RegisterRequest is a few dozen bytes; anything much larger is not one.
MAX_REQUEST_BYTES = 64 << 10


class Status:
    """gRPC status codes used here."""

    OK = 0
    #: What a go-livepeer orchestrator's refusals arrive as (a plain Go error).
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    PERMISSION_DENIED = 7
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAUTHENTICATED = 16


def _is_grpc(scope: Scope) -> bool:
    if scope["type"] != "http":
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.startswith(b"application/grpc"))
    return False


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _status_headers(code: int, message: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"grpc-status", str(code).encode())]
    if message:
        headers.append((b"grpc-message", quote(message, safe=" ").encode()))
    return headers


class GrpcMount:
    """ASGI app: gRPC requests to the transcoder service, the rest to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        hub: Hub,
        secret: str | None,
        on_startup: Callable[[], None] | None = None,
        on_shutdown: Callable[[], None] | None = None,
        orchestrator: Orchestrator | None = None,
    ) -> None:
        self.app = app
        self.hub = hub
        self.orchestrator = orchestrator
        self._secret = secret.encode() if secret else None
        self._hooks = {"lifespan.startup": on_startup, "lifespan.shutdown": on_shutdown}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
            return
        if not _is_grpc(scope):
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(ORCHESTRATOR_PREFIX) and self.orchestrator is not None:
            await self._unary(scope, receive, send, self.orchestrator)
            return
        if scope["path"] != REGISTER_PATH or self._secret is None:
            # go-livepeer serves no transcoder service without remote transcoders either.
            await self._unimplemented(scope, receive, send)
            return
        request = await self._request(scope, receive, send, net_pb2.RegisterRequest)
        if request is None:
            return
        if not hmac.compare_digest(request.secret.encode(), self._secret):
            log.warning("go-livepeer transcoder from %s: invalid secret", _peer(scope))
            await self._finish(scope, send, Status.UNAUTHENTICATED, "invalid secret")
            return
        if request.capacity <= 0:
            await self._finish(scope, send, Status.INVALID_ARGUMENT, "zero capacity")
            return
        refusal = await asyncio.to_thread(self._banned, _peer(scope))
        if refusal is not None:
            log.warning("go-livepeer transcoder from %s refused: %s", _peer(scope), refusal)
            await self._finish(scope, send, Status.PERMISSION_DENIED, refusal)
            return
        caps = (
            frozenset(capability_bits(request.capabilities.bitstring))
            if request.HasField("capabilities")
            else frozenset(DEFAULT_CAPABILITIES)
        )
        t = self.hub.attach(
            _peer(scope), _base_url(scope), request.capacity, caps, asyncio.get_running_loop()
        )
        try:
            await self._stream(scope, receive, send, t)
        finally:
            self.hub.detach(t)

    def _banned(self, peer: str) -> str | None:
        """Why the transcoder's host may not attach now (``farm transcoders evict``), or None."""
        if self.hub.records is None:
            return None
        try:
            ban = self.hub.records.ban_of(host_of(peer))
        except redis.RedisError as e:  # the ban is kept in Redis; without it, nothing to check
            log.warning("could not check bans for %s: %s", peer, e)
            return None
        if ban is None:
            return None
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ban["until"])))
        return f"this host is {ban.get('reason', 'evicted')} until {until}"

    def _lifespan(self, receive: Receive) -> Receive:
        """``receive`` that runs the startup and shutdown hooks before the app sees them."""

        async def wrapped() -> Message:
            event = await receive()
            hook = self._hooks.get(event["type"])
            if hook is not None:
                await asyncio.to_thread(hook)
            return event

        return wrapped

    async def _unimplemented(self, scope: Scope, receive: Receive, send: Send) -> None:
        """UNIMPLEMENTED, once the request is read: answering before it is, the HTTP/2 stream
        is reset and the client's connection lost for its next call."""
        left = MAX_REQUEST_BYTES
        while left > 0:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            left -= len(event.get("body", b""))
            if not event.get("more_body", False):
                break
        await self._finish(scope, send, Status.UNIMPLEMENTED, f"unknown method {scope['path']}")

    async def _unary(self, scope: Scope, receive: Receive, send: Send, orch: Orchestrator) -> None:
        """One ``net.Orchestrator`` call: a request message in, a reply message out."""
        from farm.orchestrator import SegmentRefused
        from farm.orchestrator.tokens import TokenRefused

        method = scope["path"][len(ORCHESTRATOR_PREFIX) :]
        handlers: dict[str, tuple[type[Proto], Callable[[Any], Proto]]] = {
            "GetOrchestrator": (net_pb2.OrchestratorRequest, orch.get_orchestrator),
            "EndTranscodingSession": (net_pb2.EndTranscodingSessionRequest, orch.end_session),
            "Ping": (net_pb2.PingPong, lambda r: net_pb2.PingPong(value=orch.ping(r.value))),
        }
        if method not in handlers:
            await self._unimplemented(scope, receive, send)
            return
        kind, handle = handlers[method]
        request = await self._request(scope, receive, send, kind)
        if request is None:
            return
        try:
            reply = await asyncio.to_thread(handle, request)
        except (SegmentRefused, TokenRefused) as e:
            await self._finish(scope, send, Status.UNKNOWN, str(e))
            return
        except Exception:
            log.exception("%s failed", scope["path"])
            await self._finish(scope, send, Status.INTERNAL, "internal error")
            return
        ok = _status_headers(Status.OK, "")
        trailers = await self._start(scope, send, ok)
        await send(
            {
                "type": "http.response.body",
                "body": frame(reply.SerializeToString()),
                "more_body": trailers,
            }
        )
        if trailers:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await send({"type": "http.response.trailers", "headers": ok})

    async def _request(
        self, scope: Scope, receive: Receive, send: Send, kind: type[_M]
    ) -> _M | None:
        """The one request message of the call, or None after answering an error."""
        reader = MessageReader(MAX_REQUEST_BYTES)
        messages: list[bytes] = []
        more = True
        try:
            while more:
                event = await receive()
                if event["type"] == "http.disconnect":
                    return None
                messages += reader.feed(event.get("body", b""))
                more = event.get("more_body", False)
            if len(messages) != 1 or reader.pending:
                raise FrameError(
                    f"expected one {kind.DESCRIPTOR.name}, got {len(messages)} message(s)"
                )
            return kind.FromString(messages[0])
        except (FrameError, DecodeError) as e:
            await self._finish(scope, send, Status.INTERNAL, f"malformed request: {e}")
            return None

    async def _start(self, scope: Scope, send: Send, status: list[tuple[bytes, bytes]]) -> bool:
        """Send the response headers; True when trailers will follow."""
        trailers = _header(scope, b"te") == b"trailers" and "http.response.trailers" in scope.get(
            "extensions", {}
        )
        headers = [(b"content-type", b"application/grpc")]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": headers if trailers else headers + status,
                "trailers": trailers,
            }
        )
        return trailers

    async def _finish(self, scope: Scope, send: Send, code: int, message: str) -> None:
        """A call that ends with a status and no messages."""
        status = _status_headers(code, message)
        trailers = await self._start(scope, send, status)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if trailers:
            await send({"type": "http.response.trailers", "headers": status})

    async def _stream(self, scope: Scope, receive: Receive, send: Send, t: Attached) -> None:
        """Send NotifySegment messages until the transcoder leaves or is dropped."""
        ok = _status_headers(Status.OK, "")
        trailers = await self._start(scope, send, ok)
        gone = asyncio.ensure_future(receive())  # the next event is the client going away
        try:
            while True:
                get = asyncio.ensure_future(t.outbox.get())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return  # disconnected: nobody to send a status to
                message = get.result()
                if message is None:
                    break  # dropped by the orchestrator (timeout, shutdown)
                await send(
                    {
                        "type": "http.response.body",
                        "body": frame(message.SerializeToString()),
                        "more_body": True,
                    }
                )
        finally:
            gone.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if trailers:
            await send({"type": "http.response.trailers", "headers": ok})


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _base_url(scope: Scope) -> str:
    """The URL the transcoder dialled, where it can also download segments."""
    authority = _header(scope, b"host") or _header(scope, b":authority")
    if authority:
        return f"https://{authority.decode('latin-1')}"
    host, port = scope["server"]
    return f"https://{host}:{port}"
