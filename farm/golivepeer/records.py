"""What go-livepeer transcoders did, kept in Redis beyond the node process that served them.

go-livepeer transcoders have no identity of their own on the wire, and their operators are
paid by the encoded pixels of verified renditions, so those are totalled per transcoder host
(the address it connects from) and outlive a node restart. The transcoders attached to each
node are published under the node's name with a short expiry, so ``farm transcoders`` on any
host lists them and a node that dies takes its list with it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from farm.registry import redis_py_url

__all__ = ["TranscoderRecords", "host_of"]

_TOTALS = "farm:golivepeer:totals:"
_ATTACHED = "farm:golivepeer:attached:"
_BANNED = "farm:golivepeer:banned:"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def host_of(address: str) -> str:
    """The host part of ``host:port`` (IPv6 in brackets or not)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address
    return host.strip("[]")


class TranscoderRecords:
    """Per-host totals and per-node attached lists of go-livepeer transcoders."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            redis_py_url(url), socket_timeout=5, socket_connect_timeout=5
        )

    def close(self) -> None:
        self._redis.close()

    def credit(self, host: str, pixels: int) -> None:
        """Count one verified segment and its encoded pixels for ``host``."""
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(_TOTALS + host, "segments", 1)
        pipe.hincrby(_TOTALS + host, "pixels", pixels)
        pipe.hsetnx(_TOTALS + host, "first_seen", now)
        pipe.hset(_TOTALS + host, "last_seen", now)
        pipe.execute()

    def totals(self) -> dict[str, dict[str, float]]:
        """Segments and pixels per host, since the first segment any node took from it."""
        out: dict[str, dict[str, float]] = {}
        for key in self._redis.scan_iter(match=_TOTALS + "*", count=500):
            host = _text(key)[len(_TOTALS) :]
            fields = {_text(k): float(v) for k, v in self._redis.hgetall(key).items()}
            out[host] = {
                "segments": int(fields.get("segments", 0)),
                "pixels": int(fields.get("pixels", 0)),
                "first_seen": fields.get("first_seen", 0.0),
                "last_seen": fields.get("last_seen", 0.0),
            }
        return out

    def publish(self, node: str, transcoders: list[dict[str, Any]], ttl_s: float) -> None:
        """The transcoders attached to ``node`` now; gone after ``ttl_s`` unless renewed."""
        key = _ATTACHED + node
        if not transcoders:
            self._redis.delete(key)
            return
        entries = [{**t, "node": node, "seen_at": time.time()} for t in transcoders]
        self._redis.set(key, json.dumps(entries), px=max(1, int(ttl_s * 1000)))

    def attached(self) -> list[dict[str, Any]]:
        """Every node's attached transcoders, each with its host's totals."""
        totals = self.totals()
        out: list[dict[str, Any]] = []
        for key in self._redis.scan_iter(match=_ATTACHED + "*", count=500):
            raw = self._redis.get(key)
            if raw is None:  # expired between the scan and the read
                continue
            for t in json.loads(raw):
                host = host_of(str(t.get("address", "")))
                seen = totals.get(host, {})
                out.append(
                    {
                        **t,
                        "host": host,
                        "total_segments": int(seen.get("segments", 0)),
                        "total_pixels": int(seen.get("pixels", 0)),
                    }
                )
        return sorted(out, key=lambda t: (str(t["node"]), str(t["name"])))

    def ban(self, host: str, seconds: float, reason: str = "evicted") -> float:
        """Refuse ``host``'s transcoders for ``seconds``; when the ban ends (a Unix time)."""
        until = time.time() + seconds
        record = json.dumps({"until": until, "reason": reason})
        self._redis.set(_BANNED + host, record, px=max(1, int(seconds * 1000)))
        return until

    def unban(self, host: str) -> bool:
        """Lift a ban; False when ``host`` was not banned."""
        return bool(self._redis.delete(_BANNED + host))

    def banned(self) -> dict[str, dict[str, Any]]:
        """The banned hosts, each with when its ban ends and why."""
        out: dict[str, dict[str, Any]] = {}
        for key in self._redis.scan_iter(match=_BANNED + "*", count=500):
            raw = self._redis.get(key)
            if raw is not None:  # expired between the scan and the read
                out[_text(key)[len(_BANNED) :]] = json.loads(raw)
        return out

    def ban_of(self, host: str) -> dict[str, Any] | None:
        """``host``'s ban (until, reason), or None."""
        raw = self._redis.get(_BANNED + host)
        return None if raw is None else dict(json.loads(raw))
