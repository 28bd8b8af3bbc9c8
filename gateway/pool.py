"""The orchestrator pool: health probes, scores, time-based suspension.

An orchestrator is a farm cluster (``cluster`` kind) or any orchestrator on the Livepeer
network (``livepeer`` kind). A background thread probes every cluster's node API ``/healthz``
and ``/status``, and calls GetOrchestrator on every network orchestrator (its price, and the
call's latency); a candidate's score combines region preference, success rate and latency
(both EWMAs of real segments), GetOrchestrator latency and free capacity. Network
orchestrators quoting more than the price cap are left out. A failing orchestrator is
suspended for a time, not for a count of refreshes as in go-livepeer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import httpx

from chain.payment import price_from_net
from farm.ai.client import AIClient
from farm.client import ClusterSettings, FarmClient
from farm.errors import FarmError
from farm.protocol import AI_PIPELINES, FetchPolicy, NodeHttp, net_pb2
from gateway.livepeer import Broadcaster, LivepeerOrchestrator
from gateway.settings import OrchestratorConfig

__all__ = ["Pool", "PoolEntry"]

log = logging.getLogger(__name__)
_ALPHA = 0.3  # EWMA weight of the newest observation


@dataclass
class PoolEntry:
    """One orchestrator's configuration and what the gateway has learned about it."""

    config: OrchestratorConfig
    healthy: bool = False
    probed_at: float = 0.0
    capacity: int = 0
    load: int = 0
    probe_error: str | None = None
    #: EWMA of segment round trip / segment duration (1.0 = real time).
    latency: float = 0.5
    #: EWMA of segment outcomes (1 = success).
    success: float = 1.0
    suspended_until: float = 0.0
    #: AI models its workers serve, (pipeline, model id) -> warm, from the last probe.
    ai_models: dict[tuple[str, str], bool] = field(default_factory=dict)
    #: The highest price per unit its workers advertise per AI model (numeric prices only).
    ai_prices: dict[tuple[str, str], Fraction] = field(default_factory=dict)
    _client: FarmClient | None = field(default=None, repr=False)
    _ai_client: AIClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: HTTP to its node API, verified as its configuration says (Pool sets it).
    http: NodeHttp | None = field(default=None, repr=False)
    #: livepeer kind: the network client (Pool sets it), the price it quoted (wei per
    #: pixel) and an EWMA of its GetOrchestrator latency in seconds.
    livepeer: LivepeerOrchestrator | None = field(default=None, repr=False)
    quoted_price: Fraction | None = None
    rpc_latency: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def client(self) -> FarmClient:
        with self._lock:
            if self._client is None:
                self._client = FarmClient(ClusterSettings(**self.config.cluster_fields()))
            return self._client

    @property
    def ai_client(self) -> AIClient:
        with self._lock:
            if self._ai_client is None:
                self._ai_client = AIClient(ClusterSettings(**self.config.cluster_fields()))
            return self._ai_client

    def suspended(self, now: float | None = None) -> bool:
        return (now or time.monotonic()) < self.suspended_until

    def score(self, region: str) -> float:
        free = (self.capacity - self.load) / self.capacity if self.capacity else 0.0
        region_weight = 1.0 if self.config.region == region else 0.6
        return (
            region_weight
            * (0.2 + 0.8 * self.success)
            * (0.5 + max(0.0, free))
            / (1.0 + self.latency + self.rpc_latency)
        )

    def state(self, region: str) -> dict[str, object]:
        return {
            **self.config.public(),
            "healthy": self.healthy,
            "suspended": self.suspended(),
            "capacity": self.capacity,
            "load": self.load,
            "latency": round(self.latency, 4),
            "success": round(self.success, 4),
            "score": round(self.score(region), 4),
            "probe_error": self.probe_error,
            "quoted_price": None if self.quoted_price is None else str(self.quoted_price),
            "rpc_latency": round(self.rpc_latency, 4),
            "ai_models": [
                {"pipeline": p, "model_id": m, "warm": warm, "price": _price(self.ai_prices, p, m)}
                for (p, m), warm in sorted(self.ai_models.items())
            ],
        }

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._ai_client is not None:
                self._ai_client.close()
                self._ai_client = None
        if self.http is not None:
            self.http.close()
        if self.livepeer is not None:
            self.livepeer.close()


class Pool:
    """All orchestrators, their probes and the choice among them."""

    def __init__(
        self,
        configs: Sequence[OrchestratorConfig],
        region: str = "local",
        probe_interval_s: float = 5.0,
        probe_timeout_s: float = 2.0,
        suspend_s: float = 30.0,
        broadcaster: Broadcaster | None = None,
        max_price: Fraction | None = None,
        block_number: Callable[[], int] | None = None,
        session_idle_s: float = 60.0,
        max_ticket_ev: int = 3_000_000_000_000,
        funds: Callable[[], tuple[int, int, bool]] | None = None,
        discover: Callable[[], dict[str, str]] | None = None,
        discovery_interval_s: float = 1500.0,
        discovered: Callable[[str, str], OrchestratorConfig] | None = None,
        fetch_policy: FetchPolicy | None = None,
    ) -> None:
        self.orchestrators = [PoolEntry(c) for c in configs]
        self.broadcaster = broadcaster or Broadcaster()
        #: Wei per pixel above which a network orchestrator is left out (None: no cap).
        self.max_price = max_price
        self.session_idle_s = session_idle_s
        self._network = {
            "block_number": block_number,
            "max_ticket_ev": max_ticket_ev,
            "funds": funds,
            "timeout_s": max(probe_timeout_s, 3.0),
            "policy": fetch_policy,
        }
        for o in self.orchestrators:
            self._connect(o)
        #: Discovery: name -> address of the orchestrators found (on chain, by webhook), and
        #: the entry made for each one.
        self.discover = discover
        self.discovery_interval_s = discovery_interval_s
        self.discovered = discovered
        self._discovered_at = 0.0
        self.region = region
        self.probe_interval_s = probe_interval_s
        self.suspend_s = suspend_s
        self.probe_timeout_s = probe_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _connect(self, o: PoolEntry) -> None:
        if o.config.kind == "livepeer" and o.config.address:
            o.livepeer = LivepeerOrchestrator(
                o.name,
                o.config.address,
                self.broadcaster,
                cert_fingerprint=o.config.cert_fingerprint,
                **self._network,  # type: ignore[arg-type]
            )

    def rediscover(self) -> None:
        """Add the orchestrators found (on chain, by webhook) that the pool lacks (by
        address), and drop those found earlier that are no longer found."""
        if self.discover is None or self.discovered is None:
            return
        found = self.discover()
        listed = {o.config.address for o in self.orchestrators if not o.config.discovered}
        keep, gone = [], []
        for o in self.orchestrators:
            if not o.config.discovered or o.config.address in found.values():
                keep.append(o)
            else:
                gone.append(o)
        have = {o.config.address for o in keep}
        for name, uri in sorted(found.items()):
            if uri in have or uri in listed:
                continue
            o = PoolEntry(self.discovered(name, uri))
            self._connect(o)
            keep.append(o)
            have.add(uri)
            log.info("orchestrator %s found at %s", o.name, uri)
        self.orchestrators = keep  # one assignment: readers see the old list or the new
        for o in gone:
            log.info("orchestrator %s is no longer found", o.name)
            o.close()
        self._discovered_at = time.monotonic()

    def has_clusters(self) -> bool:
        """Whether a farm cluster is among the orchestrators: segments only this farm's
        engine can take (gateway.dispatch.Segment.engine_only) have somewhere to go."""
        return any(o.config.kind == "cluster" for o in self.orchestrators)

    def by_name(self, name: str) -> PoolEntry | None:
        return next((o for o in self.orchestrators if o.name == name), None)

    # -- probes ----------------------------------------------------------------------------
    def probe(self, o: PoolEntry) -> None:
        if o.livepeer is not None:
            self._probe_livepeer(o, o.livepeer)
            return
        base = o.config.node_url.rstrip("/")
        if o.http is None:
            c = o.config
            o.http = NodeHttp(c.node_url, c.node_ca, c.node_cert_fingerprint, self.probe_timeout_s)
        try:
            http = o.http.client()
            health = http.get(f"{base}/healthz")
            status = http.get(f"{base}/status").json() if health.status_code == 200 else {}
        except (httpx.HTTPError, ValueError, FarmError) as e:
            o.healthy, o.probe_error = False, f"{e.__class__.__name__}: {e}"
            o.http.reset()  # the next probe connects, and checks a pinned certificate, afresh
        else:
            o.healthy = health.status_code == 200 and bool(status.get("capacity"))
            o.capacity = int(status.get("capacity") or 0)
            o.load = int(status.get("load") or 0)
            o.ai_models, o.ai_prices = _ai_models(status)
            o.probe_error = (
                None
                if o.healthy
                else (
                    f"healthz {health.status_code}"
                    if health.status_code != 200
                    else "no live workers"
                )
            )
        o.probed_at = time.monotonic()

    def _probe_livepeer(self, o: PoolEntry, client: LivepeerOrchestrator) -> None:
        """GetOrchestrator: reachable, taking work, its price and the call's latency; and the
        sessions of streams that sent nothing for a while are ended."""
        started = time.monotonic()
        try:
            info = client.get_orchestrator()
        except FarmError as e:
            o.healthy, o.probe_error = False, f"{e.__class__.__name__}: {e}"
        else:
            elapsed = time.monotonic() - started
            o.rpc_latency = (
                elapsed if not o.probed_at else ((1 - _ALPHA) * o.rpc_latency + _ALPHA * elapsed)
            )
            o.quoted_price = price_from_net(info.price_info)
            o.ai_models, o.ai_prices = _network_ai_models(info)
            o.healthy, o.capacity, o.load, o.probe_error = True, 1, 0, None
        o.probed_at = time.monotonic()
        client.end_idle(self.session_idle_s)

    def over_cap(self, o: PoolEntry) -> bool:
        """Whether a network orchestrator quotes more than the price cap."""
        return (
            o.livepeer is not None
            and self.max_price is not None
            and o.quoted_price is not None
            and o.quoted_price > self.max_price
        )

    def probe_all(self) -> None:
        if self.discover is not None and (
            not self._discovered_at
            or time.monotonic() - self._discovered_at >= self.discovery_interval_s
        ):
            try:
                self.rediscover()
            except Exception:
                log.exception("discovery failed; the pool is kept")
                self._discovered_at = time.monotonic()
        for o in list(self.orchestrators):
            self.probe(o)

    def start(self) -> None:
        """Probe now, then every interval on a daemon thread."""
        self.probe_all()
        self._thread = threading.Thread(target=self._run, name="gateway-probes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.probe_interval_s):
            try:
                self.probe_all()
            except Exception:
                log.exception("probe round failed")

    # -- choice ----------------------------------------------------------------------------
    def candidates(self, exclude: frozenset[str] | set[str] = frozenset()) -> list[PoolEntry]:
        """Healthy, unsuspended orchestrators not yet tried, best score first."""
        now = time.monotonic()
        usable = [
            o
            for o in self.orchestrators
            if o.healthy and not o.suspended(now) and o.name not in exclude and not self.over_cap(o)
        ]
        return sorted(usable, key=lambda o: o.score(self.region), reverse=True)

    def walk(
        self,
        max_tries: int,
        deadline: float,
        tier: Callable[[PoolEntry], int | None] | None = None,
        prefer: str | None = None,
    ) -> Iterator[PoolEntry]:
        """Orchestrators to try in turn, each once: the best untried healthy one each time
        (the lowest ``tier`` first, then the best score; a tier of None leaves one out), while
        tries and time (``deadline``, monotonic) last. ``prefer`` (a stream's orchestrator)
        comes first while it is a candidate."""
        tried: set[str] = set()
        while len(tried) < max_tries and time.monotonic() < deadline:
            candidates = self.candidates(exclude=tried)
            if tier is not None:
                ranked = [(rank, o) for o in candidates if (rank := tier(o)) is not None]
                candidates = [o for _, o in sorted(ranked, key=lambda r: r[0])]
            if prefer is not None:
                candidates.sort(key=lambda o: o.name != prefer)
            if not candidates:
                return
            best = candidates[0]
            tried.add(best.name)
            yield best

    def record(self, o: PoolEntry, ok: bool, round_trip_s: float, duration_s: float) -> None:
        """Fold one outcome into the EWMAs; ``duration_s`` 0 (AI jobs) leaves latency alone."""
        o.success = (1 - _ALPHA) * o.success + _ALPHA * (1.0 if ok else 0.0)
        if ok and duration_s > 0:
            o.latency = (1 - _ALPHA) * o.latency + _ALPHA * (round_trip_s / max(duration_s, 0.5))

    def suspend(self, o: PoolEntry, reason: str) -> None:
        o.suspended_until = time.monotonic() + self.suspend_s
        log.warning("suspending orchestrator %s for %g s: %s", o.name, self.suspend_s, reason)

    def retry_after(self) -> float:
        """Seconds until the first suspension ends or the next probe, for Retry-After."""
        now = time.monotonic()
        ends = [o.suspended_until - now for o in self.orchestrators if o.suspended(now)]
        return max(1.0, min([*ends, self.probe_interval_s]))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for o in self.orchestrators:
            o.close()


def _ai_models(
    status: dict[str, Any],
) -> tuple[dict[tuple[str, str], bool], dict[tuple[str, str], Fraction]]:
    """Over the workers' usable AI models in a /status answer: (pipeline, model id) -> warm,
    and -> the highest price per unit advertised."""
    models: dict[tuple[str, str], bool] = {}
    prices: dict[tuple[str, str], Fraction] = {}
    for worker in status.get("workers") or []:
        for entry in worker.get("ai_models") or []:
            if entry.get("status") == "down":
                continue
            key = (str(entry.get("pipeline")), str(entry.get("model_id")))
            models[key] = models.get(key, False) or bool(entry.get("warm"))
            try:
                price = Fraction(str(entry.get("price_per_unit") or 0)) / Fraction(
                    str(entry.get("pixels_per_unit") or 1)
                )
            except (ValueError, ZeroDivisionError):
                continue  # a price in a currency ("0.5USD"): not comparable here
            if price > prices.get(key, 0):
                prices[key] = price
    return models, prices


def _network_ai_models(
    info: net_pb2.OrchestratorInfo,
) -> tuple[dict[tuple[str, str], bool], dict[tuple[str, str], Fraction]]:
    """What a network orchestrator's OrchestratorInfo says of AI: (pipeline, model id) ->
    warm, from its capabilities' model constraints, and -> its price (wei per unit), from
    ``capabilities_prices``."""
    models: dict[tuple[str, str], bool] = {}
    prices: dict[tuple[str, str], Fraction] = {}
    pipelines = {p.capability: p.name for p in AI_PIPELINES.values()}
    for cap, constraints in info.capabilities.constraints.PerCapability.items():
        if cap in pipelines:
            for model, constraint in constraints.models.items():
                models[(pipelines[cap], model)] = constraint.warm
    for price in info.capabilities_prices:
        if price.capability in pipelines and price.pixelsPerUnit > 0:
            key = (pipelines[price.capability], price.constraint)
            prices[key] = Fraction(price.pricePerUnit, price.pixelsPerUnit)
    return models, prices


def _price(prices: dict[tuple[str, str], Fraction], pipeline: str, model: str) -> str | None:
    price = prices.get((pipeline, model))
    return None if price is None else str(price)
