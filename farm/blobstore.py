"""Blob stores for segment inputs and renditions, chosen by URL.

Segment bytes never travel inside broker messages: the submitter writes the input here and
the task carries its key; workers write renditions back under the job's id, so a redelivered
task overwrites the same keys (idempotent).

- ``file:///abs/dir`` or ``file://relative/dir``: a local directory (single host, embedded).
- ``redis://host:port/db?ttl=3600`` (or ``redis+socket:///path?ttl=…``): Redis with a TTL.
- ``s3://bucket/prefix?endpoint_url=…&region=…``: S3-compatible storage through boto3.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from farm.errors import ConfigError, FarmError, RetryableError

__all__ = [
    "BlobMissing",
    "BlobStore",
    "BlobStoreFailed",
    "BlobUnavailable",
    "LocalBlobStore",
    "RedisBlobStore",
    "S3BlobStore",
    "blob_store_from_url",
]

_T = TypeVar("_T")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,511}")


class BlobMissing(FarmError):
    """Raised when a key is not in the store (never written, expired or deleted)."""

    code = "blob_missing"


class BlobUnavailable(RetryableError):
    """Raised when the store cannot be reached (a blink a caller may wait out)."""

    code = "blob_unavailable"


class BlobStoreFailed(RetryableError):
    """Raised when the store answered but refused or failed the operation: a permission, a
    full or read-only disk, a Redis out of memory, an S3 access error. Waiting does not help;
    another attempt, on another worker, may succeed."""

    code = "blob_store_failed"


#: OS errors of a local (or network-mounted) directory that may pass by themselves.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EINTR,
        errno.EIO,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETUNREACH,
    }
)


def _os_error(e: OSError, doing: str, key: str, where: str) -> FarmError:
    """The farm's error for an OS error of a local blob store."""
    what = f"cannot {doing} blob {key!r} in {where}: {e.strerror or e}"
    if e.errno in _TRANSIENT_ERRNOS:
        return BlobUnavailable(what)
    return BlobStoreFailed(f"{what} ({type(e).__name__})")


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(Protocol):
    """Where inputs and renditions live between the submitter and the workers."""

    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class LocalBlobStore:
    """A directory on this host; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            raise _os_error(e, "write", key, self.url) from e
        finally:
            if tmp is not None and os.path.lexists(tmp):
                Path(tmp).unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {key!r} not found in {self.url}") from None
        except OSError as e:
            raise _os_error(e, "read", key, self.url) from e

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as e:
            raise _os_error(e, "delete", key, self.url) from e

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except OSError as e:
            raise _os_error(e, "look up", key, self.url) from e


class RedisBlobStore:
    """Redis keys with a TTL, for small clusters that already run Redis."""

    def __init__(self, url: str, ttl_s: int = 3600, prefix: str = "farm:blob:") -> None:
        import redis

        self.url = url
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url)
        self._unreachable: tuple[type[Exception], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
        )
        self._error: type[Exception] = redis.RedisError

    def _call(self, doing: str, key: str, op: Callable[[str], _T]) -> _T:
        """``op(redis key)`` with Redis's errors as the farm's."""
        name = self.prefix + _check_key(key)
        try:
            return op(name)
        except self._unreachable as e:
            raise BlobUnavailable(f"Redis blob store unreachable: {e}") from e
        except self._error as e:  # out of memory, read-only replica, an ACL refusal
            raise BlobStoreFailed(
                f"Redis blob store cannot {doing} blob {key!r}: {e} ({type(e).__name__})"
            ) from e

    def put(self, key: str, data: bytes) -> None:
        self._call("write", key, lambda k: self._redis.set(k, data, ex=self.ttl_s))

    def get(self, key: str) -> bytes:
        data = self._call("read", key, self._redis.get)
        if data is None:
            raise BlobMissing(f"blob {key!r} not found (expired after {self.ttl_s} s?)")
        return bytes(data)  # type: ignore[arg-type]

    def delete(self, key: str) -> None:
        self._call("delete", key, self._redis.delete)

    def exists(self, key: str) -> bool:
        return bool(self._call("look up", key, self._redis.exists))

    def close(self) -> None:
        self._redis.close()


class S3BlobStore:
    """An S3-compatible bucket through boto3 (``pip install livepeer-farm[s3]``).

    Credentials come from boto3's usual sources (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role). A missing key is BlobMissing; a
    blink (connection, timeout, throttling, a 5xx) is BlobUnavailable; a refusal (access
    denied, no such bucket, a bad request) is BlobStoreFailed, naming the bucket: a wrong
    bucket or credentials are never read as "the blob is not there".
    """

    def __init__(self, bucket: str, prefix: str = "", **client_args: Any) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as e:
            raise ConfigError(
                "s3:// blob stores need boto3: pip install 'livepeer-farm[s3]'"
            ) from e
        self.url = f"s3://{bucket}/{prefix}"
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Bounded waits: an unreachable endpoint fails the attempt in seconds, never minutes.
        config = botocore.config.Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}
        )
        self._s3 = boto3.client("s3", config=config, **client_args)
        self._client_error = botocore.exceptions.ClientError
        self._errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
        self._unreachable = (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectTimeoutError,
        )

    def _error(self, e: Exception, doing: str, key: str) -> FarmError:
        """The farm's error for a boto3 error: a missing key, a blink (connection, timeout,
        throttling, a 5xx), or a refusal (access denied, no such bucket, a bad request)."""
        what = f"S3 cannot {doing} blob {key!r} in {self.url}: {e}"
        if isinstance(e, self._client_error):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                return BlobMissing(f"blob {key!r} not found in {self.url}")
            if status >= 500 or code in _S3_TRANSIENT:
                return BlobUnavailable(what)
            return BlobStoreFailed(f"{what} ({code or type(e).__name__})")
        if isinstance(e, self._unreachable):
            return BlobUnavailable(what)
        return BlobStoreFailed(f"{what} ({type(e).__name__})")

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except self._errors as e:
            raise self._error(e, "write", key) from e

    def get(self, key: str) -> bytes:
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(obj["Body"].read())
        except self._errors as e:
            raise self._error(e, "read", key) from e

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            raise self._error(e, "delete", key) from e

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            error = self._error(e, "look up", key)
            if not isinstance(error, BlobMissing):
                raise error from e
        else:
            return True
        # HEAD answers a bare 404 for a missing bucket too: make sure it is only the key.
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except self._errors as e:
            error = self._error(e, "look up", key)
            raise (
                BlobStoreFailed(f"S3 bucket {self.bucket!r} of {self.url} is not there")
                if isinstance(error, BlobMissing)
                else error
            ) from e
        return False


#: S3 error codes that pass by themselves (throttling, a busy or restarting server).
_S3_TRANSIENT = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTimeout"}
)


def blob_store_from_url(url: str) -> BlobStore:
    """The blob store a URL names."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "file":
        # file:///abs/path, or file://relative/path (netloc is the first path element).
        root = Path(parts.netloc + parts.path) if parts.netloc else Path(parts.path)
        return LocalBlobStore(root)
    if parts.scheme in ("redis", "rediss", "redis+socket", "unix"):
        ttl = int(query.pop("ttl", "3600"))
        base = url.split("?", 1)[0]
        if parts.scheme == "redis+socket":
            base = "unix://" + parts.path
        return RedisBlobStore(base, ttl_s=ttl)
    if parts.scheme == "s3":
        args = {k: v for k, v in query.items() if k in ("endpoint_url", "region_name")}
        if "region" in query:
            args["region_name"] = query["region"]
        return S3BlobStore(parts.netloc, parts.path.lstrip("/"), **args)
    raise ConfigError(f"unsupported blob store URL {url!r}: use file://, redis:// or s3://")
