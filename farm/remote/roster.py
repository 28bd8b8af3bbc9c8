"""The orchestrator's roster of attached transcoders, kept in the registry's Redis.

A record holds what a transcoder reported (capabilities, capacity, region), the queues and
credential it was given (the password only as its SHA-256), its heartbeats and load, and the
pixels it transcoded. Records outlive their credentials: a revoked or expired transcoder keeps
its pixel count, for paying its operator.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from farm.errors import CredentialRevoked
from farm.registry import Capabilities, Registry, redis_py_url
from farm.remote.credentials import BrokerAcl, password_hash

__all__ = ["Roster", "TranscoderRecord"]

_KEY = "farm:transcoder:"
_INDEX = "farm:transcoders"


@dataclass(slots=True)
class TranscoderRecord:
    """One attached (or formerly attached) transcoder."""

    id: str
    name: str
    capacity: int
    queues: list[str]
    password_sha256: str
    region: str = "local"
    hostname: str = ""
    #: The address it registered from.
    address: str = ""
    gpus: list[dict[str, Any]] = field(default_factory=list)
    gpu_codecs: list[str] = field(default_factory=list)
    gpu_decoders: list[str] = field(default_factory=list)
    cpu_codecs: list[str] = field(default_factory=list)
    #: active, revoked (evicted) or expired (no heartbeat for the credential's lifetime).
    state: str = "active"
    load: int = 0
    created_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    expires_at: float = 0.0
    pixels: int = 0
    segments: int = 0

    @property
    def acl_user(self) -> str:
        return f"farm-{self.name}"

    def public(self) -> dict[str, Any]:
        """The record without its password hash, for /status and the CLI."""
        data = asdict(self)
        data.pop("password_sha256")
        return data

    def capabilities(self) -> Capabilities:
        """Its entry in the capability registry, so the router sends it work."""
        return Capabilities(
            worker=self.name,
            queues=list(self.queues),
            capacity=self.capacity,
            region=self.region,
            load=self.load,
            gpu_codecs=list(self.gpu_codecs),
            gpu_decoders=list(self.gpu_decoders),
            cpu_codecs=list(self.cpu_codecs),
            gpus=list(self.gpus),
            kind="remote",
            started_at=self.created_at,
        )


class Roster:
    """Registers, authenticates, heartbeats, revokes and expires transcoders."""

    def __init__(self, registry: Registry, acl: BrokerAcl, credential_ttl_s: float) -> None:
        self.registry = registry
        self.acl = acl
        self.credential_ttl_s = credential_ttl_s
        # Time the node was down does not count against a credential: nobody could beat.
        self.started_at = time.time()
        self._redis = redis.Redis.from_url(
            redis_py_url(registry.url), socket_timeout=5, socket_connect_timeout=5
        )

    def _save(self, record: TranscoderRecord) -> None:
        # State and counters are fields of their own: a heartbeat that read the record before
        # an eviction must not write "active" back, nor a stale pixel count.
        data = asdict(record)
        for own in ("state", "pixels", "segments"):
            data.pop(own)
        pipe = self._redis.pipeline()
        pipe.hset(_KEY + record.id, "record", json.dumps(data))
        pipe.hsetnx(_KEY + record.id, "state", record.state)
        pipe.hsetnx(_KEY + record.id, "pixels", 0)
        pipe.hsetnx(_KEY + record.id, "segments", 0)
        pipe.sadd(_INDEX, record.id)
        pipe.execute()

    def _state(self, transcoder_id: str) -> str:
        raw: bytes | None = self._redis.hget(_KEY + transcoder_id, "state")  # type: ignore[assignment]
        return raw.decode() if raw is not None else "unknown"

    def get(self, transcoder_id: str) -> TranscoderRecord | None:
        raw = self._redis.hgetall(_KEY + transcoder_id)
        if not raw or b"record" not in raw:
            return None
        data = json.loads(raw[b"record"])
        data["pixels"] = int(raw.get(b"pixels", 0))
        data["segments"] = int(raw.get(b"segments", 0))
        state = raw.get(b"state", b"unknown")
        data["state"] = state.decode() if isinstance(state, bytes) else str(state)
        known = {k: v for k, v in data.items() if k in TranscoderRecord.__dataclass_fields__}
        return TranscoderRecord(**known)

    def all(self) -> list[TranscoderRecord]:
        ids = sorted(i.decode() for i in self._redis.smembers(_INDEX))  # type: ignore[union-attr]
        records = [self.get(i) for i in ids]
        return [r for r in records if r is not None]

    def register(
        self, capacity: int, queues: list[str], **reported: Any
    ) -> tuple[TranscoderRecord, str]:
        """A new record and broker user; returns the record and its password (shown once)."""
        password = secrets.token_urlsafe(32)
        tid = secrets.token_hex(4)
        now = time.time()
        record = TranscoderRecord(
            id=tid,
            name=f"transcoder-{tid}",
            capacity=capacity,
            queues=queues,
            password_sha256=password_hash(password),
            last_heartbeat=now,
            expires_at=now + self.credential_ttl_s,
            **reported,
        )
        self.acl.grant(record.acl_user, record.password_sha256, queues)
        self._save(record)
        self.registry.beat(record.capabilities())
        return record, password

    def authenticate(self, transcoder_id: str, password: str) -> TranscoderRecord:
        """The active record this credential belongs to; CredentialRevoked otherwise."""
        record = self.get(transcoder_id)
        if record is None or not hmac.compare_digest(
            record.password_sha256, password_hash(password)
        ):
            raise CredentialRevoked("unknown transcoder credential")
        if record.state == "active" and self._overdue(record, time.time()):
            self._end(record, "expired")
        if record.state != "active":
            raise CredentialRevoked(f"transcoder credential {record.state}")
        return record

    def heartbeat(self, record: TranscoderRecord, load: int) -> TranscoderRecord:
        """Record a heartbeat: load now, credential extended, registry entry refreshed."""
        now = time.time()
        record.load = max(0, load)
        record.last_heartbeat = now
        record.expires_at = now + self.credential_ttl_s
        self._save(record)
        self.registry.beat(record.capabilities())
        if self._state(record.id) != "active":  # evicted meanwhile
            self.registry.remove(record.name)
            raise CredentialRevoked("transcoder credential revoked")
        return record

    def add_work(self, transcoder_id: str, pixels: int) -> None:
        """Count one segment and its encoded pixels to the transcoder's operator."""
        pipe = self._redis.pipeline()
        pipe.hincrby(_KEY + transcoder_id, "pixels", max(0, pixels))
        pipe.hincrby(_KEY + transcoder_id, "segments", 1)
        pipe.execute()

    def revoke(self, transcoder_id: str) -> TranscoderRecord | None:
        """Evict: delete its broker user, cut its connections, drop it from the registry."""
        record = self.get(transcoder_id)
        if record is None:
            return None
        self._end(record, "revoked")
        return record

    def _end(self, record: TranscoderRecord, state: str) -> None:
        self._redis.hset(_KEY + record.id, "state", state)
        self.acl.revoke(record.acl_user)
        self.registry.remove(record.name)
        record.state = state
        record.load = 0
        self._save(record)

    def _overdue(self, record: TranscoderRecord, now: float) -> bool:
        return record.expires_at < now and now - self.started_at > self.credential_ttl_s

    def sweep(self) -> int:
        """Expire credentials past their time; restore broker users Redis lost (a restart
        without an ACL file). Returns how many expired."""
        expired = 0
        now = time.time()
        for record in self.all():
            if record.state != "active":
                continue
            if self._overdue(record, now):
                self._end(record, "expired")
                expired += 1
            elif not self.acl.exists(record.acl_user):
                self.acl.grant(record.acl_user, record.password_sha256, record.queues)
                if self._state(record.id) != "active":  # evicted meanwhile: undo
                    self.acl.revoke(record.acl_user)
        return expired

    def close(self) -> None:
        self._redis.close()
