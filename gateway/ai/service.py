"""The gateway's AI service: pricing, holding credit, sending, and async image-to-video.

Credit and concurrency use the seams the video routes use (:func:`gateway.auth.payment_for`,
``Limiter.job``); attempts go to the same session log. ``Prefer: respond-async`` requests
keep their request and, once done, their result (or error) in the gateway's blob store, as
go-livepeer keeps ``request.json`` and ``result.json`` in its object store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

from farm.blobstore import BlobMissing
from farm.errors import FarmError
from gateway.ai.errors import livepeer_error_body
from gateway.ai.pricing import Bill, PriceTable, ai_units
from gateway.ai.requests import AIRequest
from gateway.ai.sending import AISender
from gateway.auth import Caller, payment_for
from gateway.errors import http_status
from gateway.payments import Hold
from gateway.state import GatewayState

__all__ = ["AIService"]

log = logging.getLogger(__name__)


class AIService:
    """Everything the AI routes share; one per gateway app."""

    def __init__(self, state: GatewayState) -> None:
        settings = state.settings
        self.state = state
        self.prices = PriceTable(
            settings.ai_prices, (settings.ai_price_per_unit, settings.ai_pixels_per_unit)
        )
        self.sender = AISender(
            state.pool,
            state.sessions,
            state.blobs,
            retry_timeout_s=settings.ai_retry_timeout_s,
            max_tries=settings.ai_max_tries,
            job_timeout_s=settings.ai_job_timeout_s,
            max_prices=PriceTable(settings.ai_max_prices),
        )
        self._async = ThreadPoolExecutor(settings.ai_async_workers, "gateway-ai")

    def bill(self, req: AIRequest) -> Bill:
        """The request's units, price and cost."""
        units = ai_units(req.pipeline.name, req.params, req.media)
        return self.prices.bill(req.pipeline.name, req.model_id, units)

    @contextmanager
    def held(self, caller: Caller, ref: str, cost: int) -> Iterator[Hold]:
        """One concurrent-job slot and ``cost`` held from the caller for the block."""
        slot = self.state.limiter.job(caller.key_id or f"ai:{ref}")
        with slot, payment_for(self.state, caller).hold(ref, cost) as hold:
            yield hold

    def hold_now(self, caller: Caller, ref: str, cost: int) -> tuple[Hold, ExitStack]:
        """Hold now (402, 429 raised here) and settle when the returned stack is closed."""
        with ExitStack() as stack:
            hold = stack.enter_context(self.held(caller, ref, cost))
            return hold, stack.pop_all()

    # -- Prefer: respond-async --------------------------------------------------------------
    def start_async(
        self, request_id: str, req: AIRequest, stack: AbstractContextManager[Any], work: WorkFn
    ) -> None:
        """Run ``work`` in the background (inside ``stack``) and keep its outcome."""
        record = {"pipeline": req.pipeline.name, "model_id": req.model_id, "params": req.params}
        try:
            self.state.blobs.put(_key(request_id, "request.json"), json.dumps(record).encode())
            self._async.submit(self._finish_async, request_id, stack, work)
        except BaseException:
            with stack:  # gives the hold back, then lets the error through
                raise

    def _finish_async(
        self, request_id: str, stack: AbstractContextManager[Any], work: WorkFn
    ) -> None:
        try:
            with stack:
                result = work()
        except FarmError as e:
            result = livepeer_error_body(http_status(e), str(e))
        except Exception:
            log.exception("async AI request %s crashed", request_id)
            result = livepeer_error_body(500, "internal error")
        self.state.blobs.put(_key(request_id, "result.json"), json.dumps(result).encode())

    def async_state(self, request_id: str) -> dict[str, Any] | None:
        """The stored result of an async request, None while it runs; KeyError if unknown."""
        try:
            self.state.blobs.get(_key(request_id, "request.json"))
        except BlobMissing:
            raise KeyError(request_id) from None
        try:
            raw = self.state.blobs.get(_key(request_id, "result.json"))
        except BlobMissing:
            return None
        result: dict[str, Any] = json.loads(raw)
        return result

    def close(self) -> None:
        self._async.shutdown(wait=False, cancel_futures=True)


WorkFn = Callable[[], dict[str, Any]]


def _key(request_id: str, name: str) -> str:
    return f"ai/{request_id}/{name}"
