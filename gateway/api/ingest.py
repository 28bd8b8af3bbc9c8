"""go-livepeer-compatible segment ingest: ``POST|PUT /live/{manifestID}/{seqNo}.{ts|mp4}``."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from farm.errors import PermanentError, ProfileInvalid
from farm.media.output import EXTENSIONS, MIME_TYPES
from farm.media.profiles import VideoProfile, profile_by_name, profiles_from_json
from farm.media.source import NETWORK_CODECS, Length, measure
from gateway import metrics
from gateway.api.body import read_body
from gateway.api.responses import errors
from gateway.auth import Caller, authorise, payment_for, state_of
from gateway.dispatch import Segment, SegmentOutcome
from gateway.errors import BadRequest, Forbidden, TranscodeFailed
from gateway.ethpay import EthPayments
from gateway.pricing import charge, estimate_pixels
from gateway.state import GatewayState

__all__ = ["router"]

router = APIRouter()
_MANIFEST = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SEGMENT = re.compile(r"([0-9]{1,10})\.(ts|mp4)")
#: The session log keeps seqNo in a 32-bit column.
_MAX_SEQ = 2**31 - 1
_MILLISECONDS = re.compile(r"[0-9]{1,9}")
_RESOLUTION = re.compile(r"[0-9]{1,5}x[0-9]{1,5}")
_FORMATS = {"ts": "mpegts", "mp4": "mp4"}
#: ``timeoutMultiplier`` stretches a segment's timeouts at most this much, so that a caller
#: is never kept waiting without bound.
_MAX_TIMEOUT_MULTIPLIER = 100.0


def _headers(
    request: Request, max_seconds: float
) -> tuple[float, list[VideoProfile] | None, float | None]:
    raw = request.headers.get("content-duration", "2000")
    if not _MILLISECONDS.fullmatch(raw):
        raise BadRequest(f"Content-Duration must be milliseconds, got {raw!r}")
    duration_ms = int(raw)
    if duration_ms <= 0:
        raise BadRequest("Content-Duration must be positive")
    if duration_ms > max_seconds * 1000:
        raise BadRequest(f"segment of {duration_ms} ms exceeds the {max_seconds:g} s limit")
    resolution = request.headers.get("content-resolution")
    if resolution is not None and not _RESOLUTION.fullmatch(resolution):
        raise BadRequest(f"Content-Resolution must be WxH, got {resolution!r}")
    config = request.headers.get("livepeer-transcode-configuration")
    profiles, multiplier = None, None
    if config:
        try:
            parsed = json.loads(config)
        except (ValueError, RecursionError) as e:
            raise BadRequest(f"Livepeer-Transcode-Configuration is not JSON: {e}") from e
        if not isinstance(parsed, dict):
            raise BadRequest("Livepeer-Transcode-Configuration must be a JSON object")
        profiles = _ladder(parsed.get("presets"), parsed.get("profiles"))
        multiplier = _multiplier(parsed.get("timeoutMultiplier"))
    return duration_ms / 1000.0, profiles, multiplier


def _multiplier(value: Any, source: str = "") -> float | None:
    """A configuration's ``timeoutMultiplier`` (None when unset); values up to 1 change
    nothing, as in go-livepeer, and larger ones are capped at :data:`_MAX_TIMEOUT_MULTIPLIER`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise BadRequest(f"{source}timeoutMultiplier must be a non-negative number")
    return min(float(value), _MAX_TIMEOUT_MULTIPLIER)


def _ladder(presets: Any, profiles: Any, source: str = "") -> list[VideoProfile] | None:
    """The renditions a transcode configuration (the auth webhook's answer, or the
    Livepeer-Transcode-Configuration header in its shape) asks for: its ``presets``
    (built-in profile names), then its ``profiles``; None when it names neither, so the
    defaults apply (neither field is required in that shape)."""
    if presets is None and profiles is None:
        return None
    if presets is not None and (
        not isinstance(presets, list) or not all(isinstance(n, str) for n in presets)
    ):
        raise BadRequest(f"{source}presets must be a list of built-in profile names")
    if profiles is not None and not isinstance(profiles, list):
        raise BadRequest(f"{source}profiles must be a list of profile objects")
    try:
        named = [profile_by_name(n).to_json() for n in presets or []]
        return profiles_from_json([*named, *(profiles or [])])
    except ProfileInvalid as e:
        raise BadRequest(f"{source}{e}") from e


def _authorise(
    state: GatewayState,
    request: Request,
    manifest_id: str,
    profiles: list[VideoProfile] | None,
    multiplier: float | None,
) -> tuple[Caller, str, list[VideoProfile] | None, float | None]:
    caller, decision = authorise(state, request, manifest_id)
    if decision is None:
        return caller, manifest_id, profiles, multiplier
    if not _MANIFEST.fullmatch(decision.manifest_id):
        raise Forbidden(f"auth webhook answered an invalid manifestID {decision.manifest_id!r}")
    presets = decision.body.get("presets")
    ladder = _ladder(
        presets if isinstance(presets, list) else None, decision.profiles, "auth webhook "
    )
    if ladder is not None:
        profiles = ladder
    hooked = _multiplier(decision.body.get("timeoutMultiplier"), "auth webhook ")
    return caller, decision.manifest_id, profiles, multiplier if hooked is None else hooked


def _probe(data: bytes, max_seconds: float) -> Length:
    # go-livepeer answers 422 when the codec probe fails: do it before spending anything. The
    # segment is priced by what is measured here; Content-Duration only stretches timeouts.
    try:
        return measure(data, max_seconds=max_seconds)
    except PermanentError as e:
        raise TranscodeFailed(str(e)) from e


def _transcode(state: GatewayState, caller: Caller, segment: Segment) -> tuple[SegmentOutcome, int]:
    length = _probe(segment.data, state.settings.max_segment_seconds)
    pixels = estimate_pixels(
        segment.profiles, length.duration, state.settings.estimate_margin, length.frames
    )
    # A codec no Livepeer orchestrator decodes (MPEG-2 from a broadcast feed, say) goes only
    # to this farm's clusters, and is refused before anything is held where there are none.
    engine_only = length.codec not in NETWORK_CODECS
    if engine_only and not state.dispatcher.pool.has_clusters():
        raise TranscodeFailed(
            f"{length.codec!r} video is transcoded only by a farm cluster, and this gateway "
            f"routes to none; Livepeer orchestrators decode {', '.join(sorted(NETWORK_CODECS))}"
        )
    # A caller that declares less than the segment holds gets the timeouts of what it holds.
    segment = replace(
        segment, duration_s=max(segment.duration_s, length.duration), engine_only=engine_only
    )
    session_id = segment.session_id
    ref = f"seg:{session_id}:{segment.seq}:{uuid.uuid4().hex[:12]}"
    payment = payment_for(state, caller)
    # Ticket payers pay the price advertised in their ticket params, per encoded pixel; the
    # others pay the price of the orchestrator that serves the segment.
    ticket_price = caller.price_per_pixel if caller.pays_with == "tickets" else None
    if ticket_price is not None and caller.key_id:
        reserve = EthPayments.cost(pixels, ticket_price)
    else:
        price, per = state.dispatcher.max_price()
        reserve = charge(pixels, price, per)
    slot = state.limiter.job(caller.key_id or f"stream:{session_id}")
    with slot, payment.hold(ref, reserve) as hold:
        outcome = state.dispatcher.run(segment)
        if state.crosscheck is not None:
            outcome = state.crosscheck.check(segment, outcome)
        hold.actual = (
            EthPayments.cost(outcome.pixels, ticket_price)
            if ticket_price is not None
            else outcome.cost
        )
    return outcome, hold.charged


#: Ingest may be paid by an API key, by tickets (Livepeer-Payment) or vouched for by the auth
#: webhook: the key is optional.
_INGEST_DOC: dict[str, Any] = {
    "response_model": None,
    "responses": {
        200: {
            "description": "The renditions: a JSON summary, or the files with multipart/mixed.",
            "content": {"multipart/mixed": {"schema": {"type": "string", "format": "binary"}}},
        },
        **errors(400, 401, 402, 403, 413, 422, 429, 503),
    },
    "openapi_extra": {"security": [{"apiKey": []}, {}]},
}


@router.post("/live/{manifest_id}/{segment}", **_INGEST_DOC)
@router.put("/live/{manifest_id}/{segment}", **_INGEST_DOC)
async def ingest(manifest_id: str, segment: str, request: Request) -> Response:
    """Transcode one segment of a stream (go-livepeer's HTTP push ingest)."""
    state = state_of(request)
    started = time.monotonic()
    if not _MANIFEST.fullmatch(manifest_id):
        raise BadRequest("manifestID must be 1-64 letters, digits, '-' or '_'")
    match = _SEGMENT.fullmatch(segment)
    if match is None:
        raise BadRequest("segment must be <seqNo>.ts or <seqNo>.mp4 with a numeric seqNo")
    seq, ext = int(match.group(1)), match.group(2)
    if seq > _MAX_SEQ:
        raise BadRequest(f"seqNo must be at most {_MAX_SEQ}, got {seq}")
    duration, profiles, multiplier = _headers(request, state.settings.max_segment_seconds)
    caller, manifest_id, profiles, multiplier = await run_in_threadpool(
        _authorise, state, request, manifest_id, profiles, multiplier
    )
    data = await read_body(request, state.settings.max_upload_bytes)
    if not data:
        raise BadRequest("empty body: the segment is missing")
    metrics.segment_emerged(ext)
    session_id = f"{caller.key_id or 'stream'}:{manifest_id}"
    state.sessions.open(session_id, "live", caller.key_id)
    fmt = _FORMATS[ext]
    try:
        outcome, charged = await run_in_threadpool(
            _transcode,
            state,
            caller,
            Segment(
                session_id,
                seq,
                data,
                profiles or state.default_profiles,
                duration,
                fmt,
                multiplier or 1.0,
            ),
        )
    except Exception as e:
        metrics.segment_done(
            False, time.monotonic() - started, error_code=getattr(e, "code", e.__class__.__name__)
        )
        raise
    metrics.segment_done(True, time.monotonic() - started, outcome.orchestrator)
    if "multipart/mixed" in request.headers.get("accept", ""):
        return _multipart(outcome, seq, charged)
    return JSONResponse(_summary(outcome, manifest_id, seq, charged, session_id))


@router.api_route("/live/{rest:path}", methods=["POST", "PUT"], include_in_schema=False)
async def bad_ingest_url(rest: str) -> Response:
    """Any other ingest URL (extra path parts, traversal) is a bad URL, as go-livepeer says."""
    raise BadRequest("ingest URLs are /live/<manifestID>/<seqNo>.ts|mp4")


def _summary(
    outcome: SegmentOutcome, manifest_id: str, seq: int, charged: int, session_id: str
) -> dict[str, Any]:
    return {
        "manifestID": manifest_id,
        "seqNo": seq,
        "session": session_id,
        "orchestrator": outcome.orchestrator,
        "attempts": outcome.attempts,
        "charged": charged,
        "encoded_pixels": outcome.pixels,
        "renditions": [
            {
                "name": ref.name,
                "width": ref.width,
                "height": ref.height,
                "frames": ref.frames,
                "bytes": ref.bytes,
                "duration": ref.duration,
            }
            for ref, _ in outcome.renditions
        ],
    }


def _multipart(outcome: SegmentOutcome, seq: int, charged: int) -> Response:
    boundary = secrets.token_hex(16)
    body = bytearray()
    for ref, data in outcome.renditions:
        mime = "video/MP2T" if ref.format == "mpegts" else MIME_TYPES[ref.format]
        filename = f"{ref.name}_{seq}.{EXTENSIONS[ref.format]}"
        body += (
            f"--{boundary}\r\nContent-Type: {mime}\r\nContent-Length: {len(data)}\r\n"
            f'Content-Disposition: attachment; filename="{filename}"\r\n'
            f"Rendition-Name: {ref.name}\r\n\r\n"
        ).encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return Response(
        bytes(body),
        media_type=f"multipart/mixed; boundary={boundary}",
        headers={"Livepeer-Orchestrator": outcome.orchestrator, "Livepeer-Charged": str(charged)},
    )
