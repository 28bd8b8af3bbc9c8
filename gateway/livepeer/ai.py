"""AI requests to a Livepeer orchestrator, as go-livepeer's AI gateway sends them.

The session comes from GetOrchestrator asking for the pipeline's capability with the model as
its constraint, so the price quoted and the ticket params are the model's. The request is
the pipeline's body (JSON, or a multipart form with its file) POSTed to
``<transcoder>/<pipeline>`` with:

- ``Livepeer-Segment``: a SegData for manifest ``<capability>_<model>``, sequence 0, the zero
  hash and no profiles, signed by the gateway, with the session's auth token;
- ``Livepeer-Payment``: tickets bringing the session's balance to max(price x units, EV);
- ``Authorization: Livepeer-AI-Worker-1.0``, so that media come back as URLs on the
  orchestrator rather than inline.

The answer's media (``url`` fields: the orchestrator's URLs, only on its own address, or
``data:`` URLs) are downloaded, capped in size, and handed to the caller as
``farm-blob:<n>`` keys with their bytes, which the gateway re-hosts. The statuses map onto the
dispatcher's classes: 400 is the caller's input (not retried; a refusal of the payment is
the orchestrator's), 503 is no capacity (another orchestrator, no suspension), anything else
fails the orchestrator.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import httpx

from chain.payment import price_from_net
from chain.signing import keccak256
from farm.errors import AIRequestInvalid, FarmError, InsufficientCapacity
from farm.protocol import AI_PIPELINES, BLOB_SCHEME, flatten, net_pb2
from gateway.livepeer.client import (
    MAX_REFUSAL_BYTES,
    LivepeerOrchestrator,
    OrchestratorRefused,
    OrchestratorUnreachable,
    ResultInvalid,
    Session,
    read_body,
    same_origin,
)

__all__ = [
    "AI_WORKER_PROTOCOL",
    "MAX_MEDIA_BYTES",
    "AIAnswer",
    "NetworkAI",
]

log = logging.getLogger(__name__)

#: What an AI gateway that takes result URLs sends as ``Authorization``.
AI_WORKER_PROTOCOL: Final = "Livepeer-AI-Worker-1.0"
#: Most bytes taken for one media file of an answer.
MAX_MEDIA_BYTES: Final = 300_000_000
#: The longest line of an LLM answer's event stream (one event: a chunk of text and its ids).
MAX_EVENT_BYTES: Final = 1024 * 1024
_ZERO_HASH: Final = b"\x00" * 32
#: Words in a 400 that say the payment was refused, not the input.
_PAYMENT_WORDS: Final = ("balance", "price", "ticket", "payment", "sender")


@dataclass(frozen=True, slots=True)
class AIAnswer:
    """An orchestrator's answer: the response with media as ``farm-blob:<key>``, their media
    types, and how to read each key's bytes."""

    response: dict[str, Any]
    content_types: Mapping[str, str]
    fetch: Callable[[str], bytes]


class NetworkAI:
    """AI work at one Livepeer orchestrator."""

    def __init__(self, orch: LivepeerOrchestrator, max_media_bytes: int = MAX_MEDIA_BYTES) -> None:
        self.orch = orch
        self.max_media_bytes = max_media_bytes

    def run(
        self,
        pipeline: str,
        model_id: str,
        params: Mapping[str, Any],
        files: Mapping[str, bytes],
        units: int,
        timeout: float,
    ) -> AIAnswer:
        """The answer to one request, paid for ``units`` at the model's price there."""
        deadline = time.monotonic() + timeout
        s, r = self._send(pipeline, model_id, params, files, units, deadline, stream=True)
        try:
            # The answer may carry its media inline (data: URLs): capped as media are.
            body = read_body(r, self.max_media_bytes, deadline, pipeline)
        except httpx.HTTPError as e:
            raise OrchestratorUnreachable(f"{pipeline}: {e.__class__.__name__}") from e
        finally:
            r.close()
        try:
            answer = json.loads(body)
        except ValueError as e:
            raise OrchestratorRefused(f"{pipeline}: the answer is not JSON") from e
        if not isinstance(answer, dict):
            raise OrchestratorRefused(f"{pipeline}: the answer is not a JSON object")
        return self._media(answer, s.info.transcoder, deadline)

    def stream(
        self,
        model_id: str,
        params: Mapping[str, Any],
        units: int,
        timeout: float,
    ) -> Iterator[dict[str, Any]]:
        """An LLM answer's events as they come (server-sent events), paid as :meth:`run`
        pays; the request is sent on the first ``next``."""
        deadline = time.monotonic() + timeout
        _, r = self._send("llm", model_id, params, {}, units, deadline, stream=True)
        try:
            yield from _events(_lines(r.iter_bytes(), MAX_EVENT_BYTES), deadline)
        except httpx.HTTPError as e:
            raise OrchestratorUnreachable(f"llm stream: {e.__class__.__name__}") from e
        finally:
            r.close()

    def _send(
        self,
        pipeline: str,
        model_id: str,
        params: Mapping[str, Any],
        files: Mapping[str, bytes],
        units: int,
        deadline: float,
        *,
        stream: bool = False,
    ) -> tuple[Session, httpx.Response]:
        """Send one paid request: its session and the answer (200), the session's balance
        settled. No answer, or a refusal, leaves only the reserve and raises."""
        s, reserved, credit, fee, request = self._request(
            pipeline, model_id, params, files, units, deadline
        )
        try:
            r = self.orch.http().send(request, stream=stream)
        except (httpx.HTTPError, OSError) as e:
            self._settle(s, reserved)
            self.orch.reset()
            raise OrchestratorUnreachable(f"{pipeline}: {e.__class__.__name__}") from e
        if r.status_code != 200:
            self._settle(s, reserved)
            try:
                text = read_body(r, MAX_REFUSAL_BYTES, deadline, pipeline, truncate=True).decode(
                    errors="replace"
                )
            except (httpx.HTTPError, OrchestratorUnreachable):
                text = ""
            finally:
                r.close()
            raise _refused(pipeline, r.status_code, text)
        self._settle(s, reserved + credit - fee)
        return s, r

    # -- the request ------------------------------------------------------------------------

    def _request(
        self,
        pipeline: str,
        model_id: str,
        params: Mapping[str, Any],
        files: Mapping[str, bytes],
        units: int,
        deadline: float,
    ) -> tuple[Session, Fraction, Fraction, Fraction, httpx.Request]:
        spec = AI_PIPELINES.get(pipeline)
        if spec is None:
            raise AIRequestInvalid(f"no such pipeline {pipeline!r} on the network")
        s = self.orch.ai_session(spec.capability, model_id)
        s.used_at = time.monotonic()
        manifest = f"{spec.capability}_{model_id}".encode()
        seg = net_pb2.SegData(manifestId=manifest, seq=0, hash=_ZERO_HASH)
        seg.auth_token.CopyFrom(s.info.auth_token)
        seg.sig = self.orch.broadcaster.sign(keccak256(flatten(manifest, 0, _ZERO_HASH, [])))
        with s.lock:
            price = price_from_net(s.info.price_info)
            fee = price * units
            header, _, reserved, credit = self.orch.payment(s, fee)
        headers = {
            "Livepeer-Segment": base64.b64encode(seg.SerializeToString()).decode(),
            "Livepeer-Payment": header,
            "Authorization": AI_WORKER_PROTOCOL,
        }
        url = f"{s.info.transcoder.rstrip('/')}/{pipeline}"
        body = {**params, spec.model_field: model_id}
        http = self.orch.http()
        timeout = max(0.1, deadline - time.monotonic())
        if spec.body == "json":
            request = http.build_request("POST", url, json=body, headers=headers, timeout=timeout)
        else:
            fields = {k: _field(v) for k, v in body.items() if v is not None}
            uploads = {name: (name, data) for name, data in files.items()}
            request = http.build_request(
                "POST", url, data=fields, files=uploads, headers=headers, timeout=timeout
            )
        return s, reserved, credit, fee, request

    @staticmethod
    def _settle(s: Session, balance: Fraction) -> None:
        """The session's balance after an answer: what was reserved and paid, less the fee
        when the orchestrator did the work. A refusal leaves only the reserve (tickets it may
        not have taken are not counted on)."""
        with s.lock:
            s.balance += max(balance, Fraction(0))

    # -- the answer -------------------------------------------------------------------------

    def _media(self, answer: dict[str, Any], base: str, deadline: float) -> AIAnswer:
        data: dict[str, bytes] = {}
        types: dict[str, str] = {}

        def walk(value: Any, key: str | None = None) -> Any:
            if isinstance(value, dict):
                return {k: walk(v, k) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            if key == "url" and isinstance(value, str) and value:
                blob, kind = self._fetch(value, base, deadline)
                name = str(len(data))
                data[name], types[name] = blob, kind
                return BLOB_SCHEME + name
            return value

        response: dict[str, Any] = walk(answer)
        return AIAnswer(response, types, data.__getitem__)

    def _fetch(self, url: str, base: str, deadline: float) -> tuple[bytes, str]:
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            kind = head[len("data:") :].split(";")[0] or "application/octet-stream"
            try:
                blob = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ResultInvalid("a media data: URL does not decode") from e
            if len(blob) > self.max_media_bytes:
                raise ResultInvalid(f"a media file exceeds {self.max_media_bytes} bytes")
            return blob, kind
        if not same_origin(url, base):
            # Media are fetched from the orchestrator only: a URL elsewhere (the gateway's own
            # network, say) is never requested.
            raise ResultInvalid("a media URL is not on the orchestrator's address")
        try:
            with self.orch.http().stream(
                "GET", url, timeout=max(0.1, deadline - time.monotonic())
            ) as r:
                if r.status_code != 200:
                    raise OrchestratorRefused(f"media download: HTTP {r.status_code}")
                body = read_body(r, self.max_media_bytes, deadline, "media download")
                kind = r.headers.get("content-type", "application/octet-stream").split(";")[0]
                return body, kind
        except httpx.HTTPError as e:
            raise OrchestratorUnreachable(f"media download: {e.__class__.__name__}") from e


def _field(value: Any) -> str:
    """A form field's text: JSON for anything but a string (true, 7, [..])."""
    return value if isinstance(value, str) else json.dumps(value)


def _refused(pipeline: str, status: int, text: str) -> FarmError:
    message = text.strip()[:500] or f"HTTP {status}"
    if status == 503:
        return InsufficientCapacity(f"{pipeline}: {message}")
    if status == 400 and not any(w in message.lower() for w in _PAYMENT_WORDS):
        return AIRequestInvalid(message)
    return OrchestratorRefused(f"{pipeline}: {status} {message}")


def _lines(chunks: Iterable[bytes], cap: int) -> Iterator[str]:
    """The lines of a byte stream (LF or CRLF), none longer than ``cap`` bytes: an
    orchestrator that never ends a line is refused (ResultInvalid) instead of being held in
    memory until the deadline."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > cap or any(len(line) > cap for line in lines):
            raise ResultInvalid(f"llm stream: a line exceeds {cap} bytes")
        for line in lines:
            yield line.removesuffix(b"\r").decode(errors="replace")
    if pending:
        yield pending.removesuffix(b"\r").decode(errors="replace")


def _events(lines: Iterator[str], deadline: float) -> Iterator[dict[str, Any]]:
    """The JSON of each ``data:`` event; an event with ``error`` ends the stream with it."""
    for line in lines:
        if time.monotonic() > deadline:
            raise OrchestratorUnreachable("llm stream: the answer took too long")
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError as e:
            raise OrchestratorRefused("llm stream: an event is not JSON") from e
        if not isinstance(event, dict):
            raise OrchestratorRefused("llm stream: an event is not a JSON object")
        if "error" in event:
            raise OrchestratorRefused(f"llm stream: {str(event['error'])[:300]}")
        yield event
