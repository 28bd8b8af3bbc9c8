"""The node API's HTTP side for go-livepeer transcoders: segment downloads and results.

``GET /golivepeer/segments/{token}`` serves a task's input while the task is in flight (the
token is unguessable and dies with the task). ``POST /transcodeResults`` takes what go-livepeer's
transcoder posts: ``Authorization: Livepeer-Transcoder-1.0``, ``Credentials: <orchSecret>``,
``TaskId``, ``Pixels`` (decoded pixels), and a ``multipart/mixed`` body with one part per
rendition (``Content-Type``, ``Content-Length``, ``Pixels``), or a ``livepeer/transcoding-error``
body with the error text.
"""

from __future__ import annotations

import hmac
import logging
from email.message import Message

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from farm.bodies import read_capped
from farm.golivepeer.hub import Hub, Outcome, Part

__all__ = ["ERROR_MIME", "MultipartError", "ResultsTooLarge", "install", "parse_multipart"]

log = logging.getLogger(__name__)

AUTHORIZATION = "Livepeer-Transcoder-1.0"
ERROR_MIME = "livepeer/transcoding-error"
#: go-livepeer's perceptual-hash parts; the farm never asks for them.
_HASH_MIME = "application/octet-stream"
MAX_PARTS = 32
MAX_ERROR_BYTES = 64 << 10


class MultipartError(ValueError):
    """Raised when a multipart body is malformed or a part is too large."""


class ResultsTooLarge(MultipartError):
    """Raised when a body or one of its parts is over its cap (413)."""


def _number(value: str | None) -> int | None:
    """A header's non-negative decimal integer (go-livepeer's are int64); None otherwise."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value)


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    msg = Message()
    msg["content-type"] = value
    params = {k.lower(): v for k, v in msg.get_params(failobj=[])[1:]}
    return msg.get_content_type(), params


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def parse_multipart(body: bytes, boundary: str, max_part: int) -> list[Part]:
    """The rendition parts of a ``multipart/mixed`` body, in order."""
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise MultipartError("the multipart body has no closing boundary")
    parts: list[Part] = []
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("a part has no header/body separator")
        headers = _headers(head)
        if len(data) > max_part:
            raise ResultsTooLarge(f"a part of {len(data)} bytes exceeds the {max_part}-byte cap")
        length = headers.get("content-length")
        if length is not None and _number(length) != len(data):
            raise MultipartError(f"a part says Content-Length {length} but holds {len(data)} bytes")
        ctype = headers.get("content-type", "")
        if ctype == _HASH_MIME:
            continue
        pixels = _number(headers.get("pixels"))
        if pixels is None:
            raise MultipartError("a rendition part has no valid Pixels header")
        parts.append(Part(ctype, data, pixels))
        if len(parts) > MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} renditions")
    return parts


def _refuse(request: Request, text: str, status: int) -> Response:
    """An error answered before the body was read: an HTTP/1.1 connection is closed after it,
    since the unread body would otherwise be taken for the next request."""
    closing = {"Connection": "close"} if request.scope.get("http_version", "1.1")[0] == "1" else {}
    return PlainTextResponse(text, status_code=status, headers=closing)


def install(api: FastAPI, hub: Hub, secret: str, max_part_bytes: int) -> None:
    """Add the segment download and ``/transcodeResults`` routes to the node API."""
    expected = secret.encode()

    @api.get("/golivepeer/segments/{token}", include_in_schema=False)
    def segment(token: str) -> Response:
        data = hub.segment(token)
        if data is None:
            return PlainTextResponse("no such segment (the task ended)", status_code=404)
        return Response(data, media_type="video/mp2t")

    @api.post("/transcodeResults", include_in_schema=False)
    async def transcode_results(request: Request) -> Response:
        """Results from a go-livepeer transcoder, checked in go-livepeer's order."""
        credentials = request.headers.get("credentials", "").encode()
        if request.headers.get("authorization") != AUTHORIZATION or not hmac.compare_digest(
            credentials, expected
        ):
            return _refuse(request, "invalid authorization", 401)
        mime, params = _content_type(request.headers.get("content-type", ""))
        if mime not in ("multipart/mixed", ERROR_MIME) or (
            mime == "multipart/mixed" and not params.get("boundary")
        ):
            return _refuse(request, f"unsupported media type {mime!r}", 415)
        task_id = _number(request.headers.get("taskid"))
        if task_id is None:
            return _refuse(request, "invalid TaskId", 400)
        decoded = _number(request.headers.get("pixels"))
        if decoded is None:
            return _refuse(request, "invalid Pixels", 400)
        try:
            if mime == ERROR_MIME:
                text = (await read_capped(request, MAX_ERROR_BYTES, ResultsTooLarge)).decode(
                    "utf-8", "replace"
                )
                outcome = Outcome(error=text.strip() or "transcoding error (no message)")
            else:
                body = await read_capped(request, max_part_bytes * MAX_PARTS, ResultsTooLarge)
                parts = parse_multipart(body, params["boundary"], max_part_bytes)
                outcome = Outcome(parts=tuple(parts), decoded_pixels=decoded)
        except MultipartError as e:
            return _refuse(request, str(e), 413 if isinstance(e, ResultsTooLarge) else 400)
        if not hub.deliver(task_id, outcome):
            return PlainTextResponse(f"invalid TaskId: no task {task_id} waiting", status_code=400)
        return PlainTextResponse("ok")
