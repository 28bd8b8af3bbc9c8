"""go-livepeer's ``-authWebhookUrl`` contract, with the timeout and cache it lacks.

The gateway POSTs ``{"url": "<ingest URL>"}``; 200 allows (an empty body keeps the manifest
id from the URL; a JSON body may set ``manifestID``, ``presets`` and ``profiles``); anything
else denies.
An unreachable or slow webhook denies with 503, never hangs the request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.errors import Forbidden, Unavailable

__all__ = ["AuthWebhook", "WebhookDecision"]


@dataclass(frozen=True, slots=True)
class WebhookDecision:
    """What the webhook allowed: the stream's manifest id and, optionally, its profiles."""

    manifest_id: str
    profiles: list[dict[str, Any]] | None
    body: dict[str, Any]


class AuthWebhook:
    """Calls the auth webhook once per stream and caches its answer."""

    def __init__(self, url: str, timeout_s: float = 3.0, cache_s: float = 60.0) -> None:
        self.url = url
        self.cache_s = cache_s
        # The webhook's URL is the operator's setting, never a caller's, and is often on the
        # operator's own network: it is called directly, not under SafeFetcher's guard (which
        # any URL a caller supplies goes through).
        self._client = httpx.Client(timeout=timeout_s)
        self._cache: dict[str, tuple[float, WebhookDecision | Forbidden]] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def check(self, stream_url: str, manifest_id: str) -> WebhookDecision:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(manifest_id)
        if cached and cached[0] > now:
            if isinstance(cached[1], Forbidden):
                raise cached[1]
            return cached[1]
        outcome = self._ask(stream_url, manifest_id)
        with self._lock:
            self._cache[manifest_id] = (now + self.cache_s, outcome)
        if isinstance(outcome, Forbidden):
            raise outcome
        return outcome

    def _ask(self, stream_url: str, manifest_id: str) -> WebhookDecision | Forbidden:
        self.calls += 1
        try:
            response = self._client.post(self.url, json={"url": stream_url})
        except httpx.HTTPError as e:
            raise Unavailable(f"auth webhook unreachable: {e.__class__.__name__}") from e
        if response.status_code != 200:
            return Forbidden(f"auth webhook denied the stream (HTTP {response.status_code})")
        if not response.content.strip():
            return WebhookDecision(manifest_id, None, {})
        try:
            body = response.json()
        except ValueError:
            return Forbidden("auth webhook answered 200 with a body that is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("manifestID"), str):
            return Forbidden("auth webhook answered 200 without a manifestID")
        profiles = body.get("profiles")
        return WebhookDecision(
            body["manifestID"], profiles if isinstance(profiles, list) else None, body
        )

    def close(self) -> None:
        self._client.close()
