"""Per-transcoder broker credentials: a Redis ACL user limited to what a Celery worker needs.

Each attached transcoder gets its own user on the cluster's Redis broker, with a random
password (stored only as its SHA-256, which Redis ACLs accept), access only to the queues it
was given, the bookkeeping keys kombu and Celery's result backend use, and only the commands a
worker sends. The blob store, the registry, the job table and the transcoder roster stay out
of reach. Revoking deletes the user and cuts its connections at once.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import redis

from farm.errors import RemoteUnsupported
from farm.registry import redis_py_url

__all__ = ["BrokerAcl", "acl_rules", "broker_url_for", "password_hash", "require_redis_broker"]

#: What kombu's Redis transport and Celery's Redis backend send from a worker.
WORKER_COMMANDS = (
    "ping", "echo", "select", "hello", "time", "client|setname", "client|id",
    "lpush", "rpush", "rpop", "lpop", "brpop", "llen", "lrange",
    "sadd", "srem", "smembers", "scard",
    "hset", "hget", "hdel", "hmget",
    "zadd", "zrem", "zrange", "zrevrangebyscore", "zrangebyscore", "zcard",
    "set", "setex", "get", "mget", "del", "unlink", "exists", "expire", "pexpire", "ttl", "pttl",
    "multi", "exec", "discard", "watch", "unwatch",
    # redis-py's Lock (kombu's unacked mutex) runs Lua; the key patterns still apply inside.
    "eval", "evalsha", "script|load", "script|exists",
    "publish", "subscribe", "psubscribe", "unsubscribe", "punsubscribe",
)  # fmt: skip
#: kombu's exchange tables, unacked-message index and mutex, Celery's results and pidbox.
WORKER_KEYS = (
    "_kombu.binding*",
    "unacked",
    "unacked_index",
    "unacked_mutex",
    "celery-task-meta-*",
    "*.reply.celery.pidbox*",
    "*.celery.pidbox*",
)


def password_hash(password: str) -> str:
    """The SHA-256 hex digest Redis ACLs take with ``#`` and the roster keeps."""
    return hashlib.sha256(password.encode()).hexdigest()


def require_redis_broker(broker_url: str) -> None:
    """RemoteUnsupported unless the broker is Redis (RabbitMQ users are not managed here)."""
    if not broker_url.startswith(("redis://", "rediss://")):
        scheme = broker_url.split("://", 1)[0]
        raise RemoteUnsupported(
            f"remote transcoders need a Redis broker reachable over TCP (redis:// or "
            f"rediss://); this cluster's broker is {scheme}://"
        )


def acl_rules(password_sha256: str, queues: Sequence[str]) -> list[str]:
    """``ACL SETUSER`` arguments for a worker that consumes ``queues``."""
    rules = ["reset", "on", f"#{password_sha256}", "resetchannels", "&*", "-@all"]
    rules += [f"+{c}" for c in WORKER_COMMANDS]
    # A queue's key, and its priority sub-queues (kombu appends "\x06\x16N").
    rules += [f"~{q}*" for q in queues]
    rules += [f"~{k}" for k in WORKER_KEYS]
    return rules


def broker_url_for(base: str, user: str, password: str) -> str:
    """``base`` (a redis:// URL) with ``user:password`` in place of any credentials."""
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


class BrokerAcl:
    """Creates and deletes transcoder users on the broker's Redis (needs an admin connection)."""

    def __init__(self, broker_url: str) -> None:
        self._redis = redis.Redis.from_url(
            redis_py_url(broker_url), socket_timeout=5, socket_connect_timeout=5
        )

    def grant(self, user: str, password_sha256: str, queues: Sequence[str]) -> None:
        """Create (or reset) ``user`` with a worker's rights on ``queues``."""
        self._command("ACL", "SETUSER", user, *acl_rules(password_sha256, queues))

    def exists(self, user: str) -> bool:
        return self._command("ACL", "GETUSER", user) is not None

    def _command(self, *args: str) -> object:
        return self._redis.execute_command(*args)  # type: ignore[no-untyped-call]

    def revoke(self, user: str) -> None:
        """Delete ``user`` and close every connection it holds."""
        self._command("ACL", "DELUSER", user)
        # No connection left (DELUSER closed them, or there were none) is fine.
        with contextlib.suppress(redis.ResponseError):
            self._command("CLIENT", "KILL", "USER", user)

    def close(self) -> None:
        self._redis.close()
