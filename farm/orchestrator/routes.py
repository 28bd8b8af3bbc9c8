"""The orchestrator's HTTP routes: ``POST /segment`` and the ``GET /stream/...`` renditions.

Refusals are plain text with go-livepeer's statuses and strings (a go-livepeer gateway trims
the body into its error). Once the credentials and payment pass, ``200`` and its headers go out
at once, as go-livepeer's orchestrator flushes them (the gateway waits only max(2 s, half the
segment) for headers); the ``TranscodeResult`` follows when the cluster is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from chain.payment import ExpectedPriceInvalid, Payment, PaymentMalformed, decode_payment
from chain.signing import keccak256, keccak_hasher
from chain.tickets import ZERO_ADDRESS
from farm.bodies import drain, read_capped
from farm.errors import FetchFailed
from farm.fetch import FetchPolicy, SafeFetcher
from farm.golivepeer import net_pb2
from farm.orchestrator.segdata import SegmentInvalid, SignedSegment, decode_segment
from farm.orchestrator.service import Orchestrator, SegmentRefused

__all__ = ["URI_CONTENT_TYPE", "TooLarge", "install", "payment_of", "refused"]

log = logging.getLogger(__name__)

#: The body is the segment's URL, not its bytes.
URI_CONTENT_TYPE = "application/vnd+livepeer.uri"
#: go-livepeer refuses an input URL that took longer than this to fetch.
FETCH_TIMEOUT_S = 8.0


class TooLarge(Exception):
    """Raised when a request body passes its cap."""


class Price(BaseModel):
    """A transcoding price: ``price_per_unit`` wei per ``pixels_per_unit`` pixels."""

    model_config = ConfigDict(extra="forbid", strict=True)

    price_per_unit: int = Field(ge=0, lt=2**63)
    pixels_per_unit: int = Field(1, gt=0, lt=2**63)


def refused(status: int, text: str) -> Response:
    """A refusal as go-livepeer's orchestrator writes it (plain text, ``http.Error``)."""
    return PlainTextResponse(text + "\n", status_code=status)


def payment_of(header: str) -> Payment:
    """The request's payment; an empty header is a sender paying nothing (off-chain)."""
    if not header:
        return Payment(ZERO_ADDRESS, None, None, ())
    return decode_payment(header)


def _fetch(url: str, cap: int, policy: FetchPolicy) -> bytes:
    """The segment a gateway put at ``url``: 8 s and ``cap`` bytes at most, from a public
    address or one ``FARM_FETCH_ALLOW`` lists (farm.fetch), every failure the same 400."""
    deadline = time.monotonic() + FETCH_TIMEOUT_S
    body = bytearray()
    # Certificates are not checked, as go-livepeer does not; addresses are.
    fetcher = SafeFetcher(policy, FETCH_TIMEOUT_S, verify=False)
    try:
        with fetcher.stream(url) as r:
            if r.status_code != 200:
                raise SegmentRefused(400, "BadRequest")
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > cap:
                    raise SegmentRefused(413, "segment over the size limit")
                if time.monotonic() > deadline:
                    raise SegmentRefused(400, "BadRequest")
    except FetchFailed:
        raise SegmentRefused(400, "BadRequest") from None
    finally:
        fetcher.close()
    return bytes(body)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """The body of an admitted segment: its bytes, or go-livepeer's refusal of it."""

    data: bytes
    refusal: tuple[int, str] | None = None


class _Admitted(NamedTuple):
    session: str
    price: Fraction
    #: The body's verdict, when the body was in at admission (None: the loop judges it).
    verdict: _Verdict | None


def _verdict(seg: SignedSegment, data: bytes | None, digest: bytes | None) -> _Verdict:
    """go-livepeer's checks of a segment's body, in its order: size, signed hash, empty."""
    if data is None:
        return _Verdict(b"", (413, "segment over the size limit"))
    if digest != seg.data.hash:
        return _Verdict(b"", (403, "Forbidden"))
    if not data:
        return _Verdict(b"", (400, "BadRequest"))
    return _Verdict(data)


def _settle(future: asyncio.Future[_Admitted], value: _Admitted) -> None:
    if not future.done():  # the request may be gone
        future.set_result(value)


def install(
    api: FastAPI, orch: Orchestrator, max_bytes: int, policy: FetchPolicy | None = None
) -> None:
    """Add ``/segment`` and ``/stream/...`` to the node API."""

    @api.post("/segment", include_in_schema=False)
    async def segment(request: Request) -> Response:
        try:
            payment = payment_of(request.headers.get("livepeer-payment", ""))
            seg = decode_segment(request.headers.get("livepeer-segment", ""))
        except (PaymentMalformed, SegmentInvalid) as e:
            # Refused on its headers alone: the body is read (and dropped) first, so that the
            # connection stays open for the gateway's next segment.
            await drain(request)
            if isinstance(e, SegmentInvalid):
                return refused(403, str(e))
            return refused(400 if isinstance(e, ExpectedPriceInvalid) else 402, str(e))
        # The body is read while the credentials and payment are checked; a refusal of those
        # still comes first, as go-livepeer reads the body only after them. One worker thread
        # admits the segment and, when the body is in by then (the usual case), checks it and
        # transcodes straight on: the loop sends the 200 meanwhile, without a thread hop
        # between the two steps.
        uri = request.headers.get("content-type", "").split(";")[0].strip() == URI_CONTENT_TYPE
        loop = asyncio.get_running_loop()
        body: Future[tuple[bytes | None, bytes | None]] = Future()
        admitted: asyncio.Future[_Admitted] = loop.create_future()

        def admit_and_transcode() -> net_pb2.TranscodeResult | None:
            session, price = orch.admit(seg, payment)
            verdict = None
            if not uri and body.done():
                data, digest = body.result()
                verdict = _verdict(seg, data, digest)
            loop.call_soon_threadsafe(_settle, admitted, _Admitted(session, price, verdict))
            if verdict is not None and verdict.refusal is None:
                return orch.transcode(seg, verdict.data, payment, session, price)
            return None

        work = asyncio.ensure_future(run_in_threadpool(admit_and_transcode))
        # The segment is hashed as it streams in, not after (its SegData signs the hash).
        hasher = keccak_hasher()
        try:
            data = await read_capped(request, max_bytes, TooLarge, hasher.update)
            body.set_result((data, hasher.digest()))
        except TooLarge:
            body.set_result((None, None))
        except BaseException:
            with contextlib.suppress(BaseException):
                await work
            raise
        await asyncio.wait((admitted, work), return_when=asyncio.FIRST_COMPLETED)
        if not admitted.done():  # refused (or failed) before the body was looked at
            try:
                work.result()
            except SegmentRefused as e:
                return refused(e.status, str(e))
        session, price, verdict = admitted.result()
        if verdict is None:  # admitted before the body was in, or a URL to fetch first
            got, digest = body.result()
            if got is not None and uri:
                url = got.decode(errors="replace").strip()
                try:
                    got = await run_in_threadpool(_fetch, url, max_bytes, policy or FetchPolicy())
                except SegmentRefused as e:
                    return refused(e.status, str(e))
                digest = keccak256(got)
            verdict = _verdict(seg, got, digest)
            if verdict.refusal is None:
                work = asyncio.ensure_future(
                    run_in_threadpool(orch.transcode, seg, verdict.data, payment, session, price)
                )
        if verdict.refusal is not None:
            return refused(*verdict.refusal)

        async def result() -> AsyncIterator[bytes]:
            yield b""  # the headers go out now
            out = await work
            assert out is not None
            yield out.SerializeToString()

        return StreamingResponse(result(), status_code=200)

    @api.get("/orchestrator/price")
    def price() -> dict[str, int]:
        """The transcoding price this node quotes new sessions, wei per pixels."""
        quoted = orch.price
        return {"price_per_unit": quoted.numerator, "pixels_per_unit": quoted.denominator}

    @api.put("/orchestrator/price")
    def set_price(body: Price, request: Request) -> Response:
        """Quote a new price from now on (``farm chain config --price-per-unit``)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = orch.settings.admin_token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected):
            return JSONResponse(
                {"error": "unauthorized", "message": "admin token required"}, status_code=401
            )
        quoted = orch.set_price(body.price_per_unit, body.pixels_per_unit)
        return JSONResponse(
            {"price_per_unit": quoted.numerator, "pixels_per_unit": quoted.denominator}
        )

    @api.get("/stream/{session}/{name}/{file}", include_in_schema=False)
    async def stream(session: str, name: str, file: str, request: Request) -> Response:
        path = request.url.path
        try:
            data = await run_in_threadpool(
                orch.rendition,
                path,
                request.query_params.get("expires"),
                request.query_params.get("key"),
                request.query_params.get("sig"),
            )
        except SegmentRefused as e:
            return refused(e.status, str(e))
        kind = "video/mp4" if file.endswith(".mp4") else "video/mp2t"
        return Response(data, media_type=kind)
