"""Sending one AI request to the pool's orchestrators: go-livepeer's AI retry loop
(``processAIRequest``).

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
  gateway.attempts.is_permanent: the runner, or the farm, refused the input): the caller's
  error, 400, no retry, and the orchestrator is not suspended;
- anything else (a failed job, a timeout, an unreachable broker): suspend the orchestrator
  and try another;
- out of orchestrators, time or tries: 503.

Every try is written to the session log with its orchestrator, latency, error and price.
The loop, and the judging of failures above, are the gateway's one retry loop
(gateway.attempts); this module says which orchestrators are eligible, in what order, and how
one try runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

from farm.blobstore import BlobStore
from farm.errors import FarmError
from gateway.ai.pricing import Bill, PriceTable
from gateway.ai.requests import AIRequest
from gateway.ai.results import rehost
from gateway.attempts import Tried, Work, attempt
from gateway.errors import BadRequest
from gateway.livepeer.ai import NetworkAI
from gateway.pool import Pool, PoolEntry
from gateway.pricing import attempt_price
from gateway.sessions import SessionLog

__all__ = ["AIInvalidRequest", "AIOutcome", "AISender", "AIStream"]

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


class AISender:
    """Tries an AI request on the pool's orchestrators in turn."""

    def __init__(
        self,
        pool: Pool,
        sessions: SessionLog,
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
        self.sessions = sessions
        self.blobs = blobs
        self.retry_timeout_s = retry_timeout_s
        self.max_tries = max_tries
        self.job_timeout_s = job_timeout_s

    def run(self, session_id: str, request_id: str, req: AIRequest, bill: Bill) -> AIOutcome:
        """The request's response, its media re-hosted under ``request_id``."""

        def finish(o: PoolEntry) -> dict[str, Any]:
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
            jobs = o.ai_client
            job_id = jobs.submit(req.pipeline.name, req.model_id, req.params, req.files)
            result = jobs.wait(job_id, timeout=self.job_timeout_s)
            types = {m.key: m.content_type for m in result.media}
            return rehost(result.response, types, jobs.media, self.blobs, request_id)

        done = self._loop(session_id, req, bill, finish)
        return AIOutcome(done.orchestrator.name, done.attempts, done.value)

    def stream(self, session_id: str, req: AIRequest, bill: Bill) -> AIStream:
        """Start a streaming LLM request; retries end once its first event has arrived."""

        def first(o: PoolEntry) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
            if o.livepeer is not None:
                events = NetworkAI(o.livepeer).stream(
                    req.model_id, req.params, bill.units, self.job_timeout_s
                )
            else:
                jobs = o.ai_client
                job_id = jobs.submit(
                    pipeline=req.pipeline.name, model_id=req.model_id, params=req.params
                )
                events = iter(jobs.stream(job_id, timeout=self.job_timeout_s))
            for event in events:
                return event, events
            raise _EmptyStream("the job streamed nothing")

        done = self._loop(session_id, req, bill, first)
        head, rest = done.value
        return AIStream(done.orchestrator.name, done.attempts, head, rest)

    def _loop(
        self,
        session_id: str,
        req: AIRequest,
        bill: Bill,
        finish: Callable[[PoolEntry], T],
    ) -> Tried[T]:
        key = (req.pipeline.name, req.model_id)
        most = Fraction(*bill.price)

        limit = Fraction(*self.max_prices.price(*key)) if self.max_prices else Fraction(0)
        cap = limit if limit > 0 else None

        def tier(o: PoolEntry) -> int | None:
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

        work = Work(
            run=lambda o, _: finish(o),
            # The runner's own message, without the job wrapper.
            refused=AIInvalidRequest,
            label=f"AI request {session_id}",
            session_id=session_id,
            # The caller pays the gateway's price for the model wherever it runs.
            price=lambda o: attempt_price(o, bill.price),
            # The session log's pixels column holds the request's billing units.
            billed=lambda _: (bill.units, bill.cost),
            tier=tier,
        )
        deadline = time.monotonic() + self.retry_timeout_s
        return attempt(self.pool, self.sessions, work, max_tries=self.max_tries, deadline=deadline)


class _EmptyStream(FarmError):
    """Raised when a streaming job ends before its first event."""

    code = "empty_stream"
