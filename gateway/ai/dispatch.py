"""Running one AI request on the pool: go-livepeer's AI retry loop (``processAIRequest``).

Orchestrators whose workers serve the model warm are tried first, then those serving it cold
(go-livepeer's warm and cold pools), best score first within each; those advertising a higher
price for the model than the gateway's are left out (go-livepeer's max price): a cluster's
price against the gateway's own, a network orchestrator's quote (wei per unit) against
FARM_AI_MAX_PRICES. A cluster runs the request as a job on its queues; a network orchestrator
(``livepeer`` kind) gets go-livepeer's AI request, paid with tickets
(gateway.livepeer.ai). Each is tried
at most once per request, within a time budget (go-livepeer's
``-aiProcessingRetryTimeout``) and a count (20 tries):

- no capacity (``NoCapacity`` on submit, ``insufficient_capacity`` from the job): try
  another orchestrator, leaving this one in the pool;
- ``invalid_request`` or another permanent input error (a ``PermanentError`` by its code,
  gateway.dispatch.is_permanent: the runner, or the farm, refused the input): the caller's
  error, 400, no retry, and the orchestrator is not suspended;
- anything else (a failed job, a timeout, an unreachable broker): suspend the orchestrator
  and try another;
- out of orchestrators, time or tries: 503.

Every try is written to the session log with its orchestrator, latency, error and price.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

from celery.exceptions import CeleryError
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from farm.blobstore import BlobStore
from farm.errors import CAPACITY_ERRORS, FarmError, error_class
from gateway import metrics
from gateway.ai.pricing import Bill, PriceTable
from gateway.ai.requests import AIRequest
from gateway.ai.results import rehost
from gateway.dispatch import is_permanent, public_message
from gateway.errors import BadRequest, NoOrchestrators
from gateway.livepeer.ai import NetworkAI
from gateway.pool import Orchestrator, Pool
from gateway.sessions import SessionLog

__all__ = ["AIDispatcher", "AIInvalidRequest", "AIOutcome", "AIStream"]

log = logging.getLogger(__name__)

_INFRA_ERRORS = (OSError, RedisError, KombuError, CeleryError, SQLAlchemyError)

T = TypeVar("T")


class AIInvalidRequest(BadRequest):
    """Raised when an orchestrator's runner refused the request's input (400, not retried)."""

    code = "invalid_request"


@dataclass(frozen=True, slots=True)
class AIOutcome:
    """A finished request: where it ran, after how many tries, and its rewritten response."""

    orchestrator: str
    attempts: int
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AIStream:
    """An LLM stream under way: its first event is in hand, the rest still to come."""

    orchestrator: str
    attempts: int
    first: dict[str, Any]
    rest: Iterator[dict[str, Any]]


class AIDispatcher:
    """Tries an AI request on the pool's orchestrators in turn."""

    def __init__(
        self,
        pool: Pool,
        log_: SessionLog,
        blobs: BlobStore,
        *,
        retry_timeout_s: float = 10.0,
        max_tries: int = 20,
        job_timeout_s: float = 300.0,
        max_prices: PriceTable | None = None,
    ) -> None:
        #: Wei per unit that network orchestrators may ask per (pipeline, model); 0 or
        #: None: no cap.
        self.max_prices = max_prices
        self.pool = pool
        self.log = log_
        self.blobs = blobs
        self.retry_timeout_s = retry_timeout_s
        self.max_tries = max_tries
        self.job_timeout_s = job_timeout_s

    def run(self, session_id: str, request_id: str, req: AIRequest, bill: Bill) -> AIOutcome:
        """The request's response, its media re-hosted under ``request_id``."""

        def finish(o: Orchestrator) -> dict[str, Any]:
            if o.livepeer is not None:
                answer = NetworkAI(o.livepeer).run(
                    req.pipeline.name,
                    req.model_id,
                    req.params,
                    req.files,
                    bill.units,
                    self.job_timeout_s,
                )
                return rehost(
                    answer.response, answer.content_types, answer.fetch, self.blobs, request_id
                )
            jobs = o.client.ai
            job_id = jobs.submit(req.pipeline.name, req.model_id, req.params, req.files)
            result = jobs.wait(job_id, timeout=self.job_timeout_s)
            types = {m.key: m.content_type for m in result.media}
            return rehost(result.response, types, jobs.media, self.blobs, request_id)

        name, attempts, response = self._loop(session_id, req, bill, finish)
        return AIOutcome(name, attempts, response)

    def stream(self, session_id: str, req: AIRequest, bill: Bill) -> AIStream:
        """Start a streaming LLM request; retries end once its first event has arrived."""

        def first(o: Orchestrator) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
            if o.livepeer is not None:
                events = NetworkAI(o.livepeer).stream(
                    req.model_id, req.params, bill.units, self.job_timeout_s
                )
            else:
                jobs = o.client.ai
                job_id = jobs.submit(
                    pipeline=req.pipeline.name, model_id=req.model_id, params=req.params
                )
                events = iter(jobs.stream(job_id, timeout=self.job_timeout_s))
            for event in events:
                return event, events
            raise _EmptyStream("the job streamed nothing")

        name, attempts, (head, rest) = self._loop(session_id, req, bill, first)
        return AIStream(name, attempts, head, rest)

    def _loop(
        self,
        session_id: str,
        req: AIRequest,
        bill: Bill,
        finish: Callable[[Orchestrator], T],
    ) -> tuple[str, int, T]:
        deadline = time.monotonic() + self.retry_timeout_s
        last_error = "no healthy orchestrator"
        tries = 0
        key = (req.pipeline.name, req.model_id)
        most = Fraction(*bill.price)

        limit = Fraction(*self.max_prices.price(*key)) if self.max_prices else Fraction(0)
        cap = limit if limit > 0 else None

        def tier(o: Orchestrator) -> int | None:
            if o.livepeer is not None:
                # A network orchestrator quotes wei per unit: go-livepeer's
                # -maxPricePerCapability applies (FARM_AI_MAX_PRICES).
                if cap is not None and o.ai_prices.get(key, 0) > cap:
                    return None
            elif most and o.ai_prices.get(key, 0) > most:
                return None  # above the gateway's price: go-livepeer's max price filter
            # go-livepeer's warm pool first, then the cold one; orchestrators whose workers
            # did not advertise the model at the last probe last (they may have it by now).
            warm = o.ai_models.get(key)
            return 0 if warm else 1 if warm is not None else 2

        for o in self.pool.walk(self.max_tries, deadline, tier):
            tries += 1
            if tries > 1:
                metrics.orchestrator_swap(last_error)
            started = time.monotonic()
            try:
                value = finish(o)
            except (FarmError, *_INFRA_ERRORS) as e:
                code = str(getattr(e, "code", None) or e.__class__.__name__)
                last_error = self._record(session_id, tries, o, started, bill, code, e)
                if is_permanent(e):
                    # The caller's input (the runner's own message, without the job wrapper):
                    # no other orchestrator would answer otherwise, and this one is not at fault.
                    raise AIInvalidRequest(public_message(e)) from e
                if not _at_capacity(code):
                    self.pool.suspend(o, f"{last_error}: {e}")
                continue
            self._record(session_id, tries, o, started, bill)
            return o.name, tries, value
        raise NoOrchestrators(
            f"no orchestrators available after {tries} tries; last: {last_error}"
        ).with_retry_after(self.pool.retry_after())

    def _record(
        self,
        session_id: str,
        attempt: int,
        o: Orchestrator,
        started: float,
        bill: Bill,
        code: str | None = None,
        error: Exception | None = None,
    ) -> str:
        """Log one try; for a failure, the description the next swap is counted under."""
        latency = time.monotonic() - started
        if code is None or not _at_capacity(code):  # being full is not failing
            self.pool.record(o, code is None, latency, 0.0)
        self.log.attempt(
            session_id,
            0,
            attempt,
            o.name,
            latency,
            "done" if code is None else "failed",
            price=bill.price,
            # The session log's pixels column holds the request's billing units.
            pixels=bill.units if code is None else 0,
            cost=bill.cost if code is None else 0,
            error_code=None if code is None else code[:64],
            error=None if error is None else public_message(error)[:2000],
        )
        if code is None:
            return ""
        log.info(
            "AI request %s try %s on %s failed: %s: %s", session_id, attempt, o.name, code, error
        )
        return f"{o.name}: {code}"


def _at_capacity(code: str) -> bool:
    """Whether a try failed because the orchestrator is full or its runner down there, which
    may not be so elsewhere (no suspension)."""
    return issubclass(error_class(code), CAPACITY_ERRORS)


class _EmptyStream(FarmError):
    """Raised when a streaming job ends before its first event."""

    code = "empty_stream"
