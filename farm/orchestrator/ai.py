"""AI jobs on the orchestrator: go-livepeer's AI routes, paid with its tickets, run on the farm.

A gateway POSTs a pipeline's body to ``<serviceURI>/<pipeline>`` with ``Livepeer-Payment`` and
``Livepeer-Segment`` (a SegData it signed with manifest id ``<capability>_<model>``, seq 0,
the hash of nothing and no profiles). The checks run in go-livepeer's order, each refusal with
its status and text: the payment decodes (402), the SegData's signature and auth token (403),
the units (400), a live worker serving the model (503 ``insufficient capacity``), the tickets
credited to (sender, ``<capability>_<model>``) (400), the balance (400 ``Insufficient
balance``). Then the job runs on the ``ai.<pipeline>`` queues, warm model first
(farm.ai.routing), and only a job that succeeded is debited, price x units.

Media in the answer are served by this node at ``<serviceURI>/stream/<requestID>/<name>``,
signed as the transcoding renditions are; a gateway without ``Authorization:
Livepeer-AI-Worker-1.0`` (go-livepeer before its AI worker protocol) gets the pictures of
text-to-image, image-to-image and upscale inline as ``data:`` URLs instead. image-to-video's
frames come back as one H.264 MP4 (farm.orchestrator.aivideo). A streamed LLM answer is
server-sent events, ``data: {chunk}`` each.

The price is the one the gateway's tickets were issued at (the recipient rand binds it). On
chain it must be at least the model's price now (farm.orchestrator.aiprices): tickets quoted
for transcoding, or for a cheaper model, do not pay for this one.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf.message import DecodeError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from chain.payment import ExpectedPriceInvalid, Payment, PaymentMalformed
from farm.ai.client import AIClient
from farm.ai.results import MEDIA_EXTENSIONS, MEDIA_TYPES, AIResult, blob_key
from farm.bodies import drain, read_capped
from farm.client import JobFailedError, JobTimeout
from farm.errors import CAPACITY_ERRORS, AIRequestInvalid, FarmError, NoCapacity, error_class
from farm.golivepeer import net_pb2
from farm.orchestrator.aiprices import model_prices
from farm.orchestrator.aireq import (
    AI_PIPELINES,
    AIPipeline,
    ParsedAIRequest,
    parse_form,
    parse_json,
)
from farm.orchestrator.aireq import units as request_units
from farm.orchestrator.aivideo import DEFAULT_FPS, frames_to_mp4
from farm.orchestrator.routes import TooLarge, payment_of, refused
from farm.orchestrator.segdata import MAX_HEADER_BYTES, signature_valid
from farm.orchestrator.service import Orchestrator, SegmentRefused
from farm.orchestrator.tokens import TokenRefused

__all__ = ["AI_WORKER_PROTOCOL", "AIJobs", "Admitted", "install"]

log = logging.getLogger(__name__)

#: What a gateway that takes result URLs (not inline pictures) sends as ``Authorization``.
AI_WORKER_PROTOCOL: Final = "Livepeer-AI-Worker-1.0"
#: Pipelines whose pictures older gateways take inline.
_INLINE: Final = frozenset({"text-to-image", "image-to-image", "upscale"})


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request past every check: who pays, into which balance, at what price, for what."""

    sender: bytes
    manifest: str
    price: Fraction
    units: int

    @property
    def fee(self) -> Fraction:
        return self.price * self.units


class AIJobs:
    """The AI routes' work for one Orchestrator."""

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch
        self.timeout_s = orch.settings.ai_timeout_s + 30.0
        self._client: AIClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> AIClient:
        """The cluster's AI client, built on the first AI request."""
        with self._lock:
            if self._client is None:
                self._client = AIClient(self.orch.settings)
            return self._client

    # -- before the work ------------------------------------------------------------------

    def credentials(self, header: str, payment: Payment) -> None:
        """The SegData's signature (on chain) and auth token; SegmentRefused (403).

        Not farm.orchestrator.segdata.decode_segment: an AI SegData names a model in its
        manifest id (``30_stabilityai/...``), which a transcoding manifest may not, and
        carries no profiles or duration to check."""
        if len(header) > MAX_HEADER_BYTES:
            raise SegmentRefused(403, "ErrorSegEncoding")
        try:
            raw = base64.b64decode(header.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SegmentRefused(403, "ErrorSegEncoding") from None
        seg = net_pb2.SegData()
        try:
            seg.ParseFromString(raw)
        except DecodeError as e:
            raise SegmentRefused(403, f"proto: {e}") from None
        if self.orch.chain is not None and not signature_valid(seg, [], payment.sender):
            raise SegmentRefused(403, "ErrSegSig")
        try:
            self.orch.tokens.check(seg.auth_token if seg.HasField("auth_token") else None)
        except TokenRefused as e:
            raise SegmentRefused(403, str(e)) from None

    def admit(self, req: ParsedAIRequest, payment: Payment, units: int) -> Admitted:
        """Capacity, payment and balance, in go-livepeer's order."""
        pipeline, model = req.pipeline.name, req.model_id
        try:
            self.client.route(pipeline, model)
        except NoCapacity:
            raise SegmentRefused(503, "insufficient capacity") from None
        price = self._price(req, payment)
        balance = self.orch.process_payment(payment, req.manifest)
        if self.orch.chain is not None and price > 0 and balance < self.orch.settings.ticket_ev_wei:
            raise SegmentRefused(400, "Insufficient balance")
        return Admitted(payment.sender, req.manifest, price, units)

    def _price(self, req: ParsedAIRequest, payment: Payment) -> Fraction:
        """The price the request is charged at: the one its tickets were quoted."""
        if self.orch.chain is None:
            return payment.price or Fraction(0)
        if payment.params is not None and payment.price is None:
            raise SegmentRefused(
                400, 'invalid expected price sent with payment err="expected price is nil"'
            )
        own = model_prices(self.orch.live()).get((req.pipeline.name, req.model_id))
        if own is None:
            raise SegmentRefused(400, f"no price set for {req.pipeline.name} {req.model_id}")
        price = payment.price if payment.price is not None else own
        if price < own:
            raise SegmentRefused(
                400,
                f'invalid expected price sent with payment err="expected price {price} is '
                f'below the price of {req.pipeline.name} {req.model_id}, {own}"',
            )
        return price

    # -- the work -------------------------------------------------------------------------

    def _submit(self, req: ParsedAIRequest, request_id: str) -> str:
        try:
            return self.client.submit(
                req.pipeline.name,
                req.model_id,
                req.params,
                req.files,
                job_id=f"orch-ai-{request_id}",
            )
        except NoCapacity:
            raise SegmentRefused(503, "insufficient capacity") from None
        except FarmError as e:
            raise _failed(e) from e

    def run(
        self, req: ParsedAIRequest, adm: Admitted, request_id: str, inline: bool
    ) -> dict[str, Any]:
        """The job's answer with its media served here; the sender is debited only for a
        job that succeeded. SegmentRefused (400, 503, 500) when it did not."""
        job_id = self._submit(req, request_id)
        try:
            result = self.client.wait(job_id, timeout=self.timeout_s)
            response = self._results(req, result, request_id, inline)
        except (FarmError, JobTimeout) as e:
            raise _failed(e) from e
        self._debit(adm)
        return response

    def stream(
        self, req: ParsedAIRequest, adm: Admitted, request_id: str
    ) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
        """A streamed LLM answer: its first chunk (the sender is debited once it is here) and
        the rest."""
        job_id = self._submit(req, request_id)
        chunks = iter(self.client.stream(job_id, timeout=self.timeout_s))
        try:
            first = next(chunks)
        except StopIteration:
            raise SegmentRefused(500, "the model produced no response") from None
        except (FarmError, JobTimeout) as e:
            raise _failed(e) from e
        self._debit(adm)
        return first, chunks

    def _debit(self, adm: Admitted) -> None:
        if adm.fee:
            self.orch.balances.add(adm.sender, adm.manifest, -adm.fee)

    # -- the answer -----------------------------------------------------------------------

    def _results(
        self, req: ParsedAIRequest, result: AIResult, request_id: str, inline: bool
    ) -> dict[str, Any]:
        types = {m.key: m.content_type for m in result.media}
        response = result.response
        if req.pipeline.name == "image-to-video" and "frames" in response:
            response = self._video(req, result, types)
        inline = inline and req.pipeline.name in _INLINE
        ai = self.client

        def walk(value: Any, key: str | None = None) -> Any:
            if isinstance(value, dict):
                return {k: walk(v, k) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            if key == "url" and isinstance(value, str) and value.startswith("farm-blob:"):
                blob = blob_key(value)
                kind = types.get(blob, "application/octet-stream")
                if inline:
                    data = base64.b64encode(ai.media(blob)).decode()
                    return (
                        f"data:{kind if kind.startswith('image/') else 'image/png'};base64,{data}"
                    )
                name = secrets.token_hex(4) + MEDIA_EXTENSIONS.get(kind, ".bin")
                return self.orch.publish(f"/stream/{request_id}/{name}", blob)
            return value

        answer: dict[str, Any] = walk(response)
        return answer

    def _video(
        self, req: ParsedAIRequest, result: AIResult, types: dict[str, str]
    ) -> dict[str, Any]:
        """The frames of each batch as one MP4, answered as go-livepeer does: an
        ImageResponse whose ``url`` is the video."""
        fps = req.params.get("fps", DEFAULT_FPS)
        try:
            fps = int(fps)
        except (TypeError, ValueError):
            fps = DEFAULT_FPS
        ai = self.client
        images = []
        for i, batch in enumerate(result.response.get("frames") or []):
            frames = [f for f in batch if isinstance(f, dict) and isinstance(f.get("url"), str)]
            video = frames_to_mp4([ai.media(f["url"]) for f in frames], fps)
            key = f"ai/{result.job_id}/out/video-{i}.mp4"
            self.orch.res.blobs.put(key, video)
            types[key] = "video/mp4"
            images.append(
                {
                    "url": "farm-blob:" + key,
                    "seed": frames[0].get("seed", 0) if frames else 0,
                    "nsfw": any(bool(f.get("nsfw")) for f in frames),
                }
            )
        if not images:
            raise SegmentRefused(500, "the runner answered image-to-video without frames")
        return {"images": images}


def _failed(e: Exception) -> SegmentRefused:
    """A job that failed, as go-livepeer's orchestrator answers it."""
    if isinstance(e, SegmentRefused):
        return e
    # A failed job carries its failure's code; its class says what go-livepeer answers.
    failure = error_class(e.code) if isinstance(e, FarmError) else FarmError
    if issubclass(failure, AIRequestInvalid):
        message = e.job.error if isinstance(e, JobFailedError) else str(e)
        return SegmentRefused(400, message or "invalid request")
    if issubclass(failure, CAPACITY_ERRORS):
        return SegmentRefused(503, "insufficient capacity")
    log.warning("AI job failed: %s", e)
    return SegmentRefused(500, str(e))


# -- routes -------------------------------------------------------------------------------


def install(api: FastAPI, orch: Orchestrator, max_bytes: int) -> AIJobs:
    """Add the AI routes and ``/stream/<requestID>/<name>`` to the node API."""
    jobs = AIJobs(orch)

    async def handle(pipeline: AIPipeline, request: Request) -> Response:
        try:
            payment = payment_of(request.headers.get("livepeer-payment", ""))
        except PaymentMalformed as e:
            await drain(request)  # the connection stays open for the next request
            return refused(400 if isinstance(e, ExpectedPriceInvalid) else 402, str(e))
        try:
            await run_in_threadpool(
                jobs.credentials, request.headers.get("livepeer-segment", ""), payment
            )
            try:
                body = await read_capped(request, max_bytes, TooLarge)
            except TooLarge:
                return refused(413, "request body over the size limit")
            if pipeline.body == "json":
                req = parse_json(pipeline, body)
            else:
                req = await parse_form(pipeline, request.headers, body)
            units = await run_in_threadpool(request_units, req)
            adm = await run_in_threadpool(jobs.admit, req, payment, units)
            request_id = secrets.token_hex(8)
            if pipeline.name == "llm" and req.params.get("stream") is True:
                first, rest = await run_in_threadpool(jobs.stream, req, adm, request_id)
                return StreamingResponse(_events(first, rest), media_type="text/event-stream")
            inline = request.headers.get("authorization") != AI_WORKER_PROTOCOL
            answer = await run_in_threadpool(jobs.run, req, adm, request_id, inline)
        except SegmentRefused as e:
            await drain(request)  # refused before its body was read: read it first
            return refused(e.status, str(e))
        return JSONResponse(answer)

    def endpoint(pipeline: AIPipeline) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            return await handle(pipeline, request)

        return route

    for pipeline in AI_PIPELINES.values():
        api.add_api_route(
            f"/{pipeline.name}", endpoint(pipeline), methods=["POST"], include_in_schema=False
        )

    @api.get("/stream/{request_id}/{name}", include_in_schema=False)
    async def media(request_id: str, name: str, request: Request) -> Response:
        try:
            data = await run_in_threadpool(
                orch.rendition,
                request.url.path,
                request.query_params.get("expires"),
                request.query_params.get("key"),
                request.query_params.get("sig"),
            )
        except SegmentRefused as e:
            return refused(e.status, str(e))
        ext = name[name.rfind(".") :] if "." in name else ""
        return Response(data, media_type=MEDIA_TYPES.get(ext, "application/octet-stream"))

    return jobs


async def _events(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Any:
    """Server-sent events, go-livepeer's way: ``data: {chunk}`` and a blank line each."""
    yield f"data: {json.dumps(first)}\n\n".encode()
    try:
        async for chunk in iterate_in_threadpool(rest):
            yield f"data: {json.dumps(chunk)}\n\n".encode()
    except (FarmError, JobTimeout) as e:  # the headers are out: the stream just ends
        log.warning("LLM stream ended early: %s", e)
