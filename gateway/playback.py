"""Playback URLs: signed, expiring paths a player opens with no ``Authorization`` header.

A task's outputs are also served under ``/api/task/{id}/play/{token}/...``. The token is a
path segment, so the relative URIs inside the playlists (``low/index.m3u8``, ``0.ts``)
resolve under it and carry it too. It is ``<expiry, unix seconds>-<signature>``: the first
32 hex digits of HMAC-SHA256 over ``<task id>:<expiry>``, keyed by ``FARM_PLAYBACK_SECRET``
(derived from the admin token when unset, so that replicas sharing one agree).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

from gateway.errors import Forbidden
from gateway.settings import GatewaySettings

__all__ = ["TOKEN_PATTERN", "PlaybackSigner", "with_playback_urls"]

#: The shape of a token in a URL path (anything else is refused before any signature check).
TOKEN_PATTERN = r"^[0-9]{1,12}-[0-9a-f]{32}$"
_TOKEN = re.compile(TOKEN_PATTERN)
_DERIVE = b"farm gateway playback urls v1"


@dataclass(frozen=True, slots=True)
class PlaybackSigner:
    """Issues and checks playback tokens of one gateway (or of replicas sharing a secret)."""

    key: bytes
    ttl_s: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> PlaybackSigner:
        secret = settings.playback_secret or settings.admin_token
        key = hmac.new(secret.get_secret_value().encode(), _DERIVE, hashlib.sha256).digest()
        return cls(key, settings.playback_ttl_s)

    def _signature(self, task_id: str, expires: int) -> str:
        message = f"{task_id}:{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    def token(self, task_id: str, now: float | None = None) -> tuple[str, int]:
        """A token for ``task_id`` and its expiry (unix seconds), ``ttl_s`` from ``now``."""
        expires = int(time.time() if now is None else now) + self.ttl_s
        return f"{expires}-{self._signature(task_id, expires)}", expires

    def check(self, task_id: str, token: str, now: float | None = None) -> None:
        """Raise Forbidden unless ``token`` was issued for ``task_id`` and has not expired."""
        if not _TOKEN.match(token):
            raise Forbidden("invalid playback token")
        stamp, signature = token.split("-")
        expires = int(stamp)
        if not hmac.compare_digest(signature, self._signature(task_id, expires)):
            raise Forbidden("invalid playback token")
        if expires < (time.time() if now is None else now):
            raise Forbidden("playback token expired: get the task again for fresh URLs")


def with_playback_urls(task: dict[str, Any], signer: PlaybackSigner) -> dict[str, Any]:
    """``task`` (as ``StudioJobRunner.get`` gives it) with a ``playbackUrl`` beside each output's
    ``url`` and the URLs' expiry (``output.playbackExpiresAt``, unix milliseconds)."""
    output = task.get("output")
    if not output:
        return task
    token, expires = signer.token(task["id"])
    marker = f"/api/task/{task['id']}/output/"

    def signed(entry: dict[str, Any]) -> dict[str, Any]:
        url = str(entry["url"])
        if not url.startswith(marker):
            return entry
        play = f"/api/task/{task['id']}/play/{token}/{url.removeprefix(marker)}"
        return {**entry, "playbackUrl": play}

    output = {**output, "playbackExpiresAt": expires * 1000}
    if isinstance(output.get("hls"), dict):
        output["hls"] = signed(output["hls"])
    if isinstance(output.get("mp4"), list):
        output["mp4"] = [signed(m) for m in output["mp4"]]
    return {**task, "output": output}
