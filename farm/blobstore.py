"""Blob stores for segment inputs and renditions, chosen by URL.

Segment bytes never travel inside broker messages: the submitter writes the input here and
the task carries its key; workers write renditions back under the job's id, so a redelivered
task overwrites the same keys (idempotent).

- ``file:///abs/dir`` or ``file://relative/dir``: a local directory (single host, embedded).
- ``redis://host:port/db?ttl=3600`` (or ``redis+socket:///path?ttl=…``): Redis with a TTL.
- ``s3://bucket/prefix?endpoint_url=…&region=…``: S3-compatible storage through boto3.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from farm.errors import ConfigError, FarmError, RetryableError

__all__ = [
    "BlobMissing",
    "BlobStore",
    "BlobUnavailable",
    "LocalBlobStore",
    "RedisBlobStore",
    "S3BlobStore",
    "blob_store_from_url",
]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,511}")


class BlobMissing(FarmError):
    """Raised when a key is not in the store (never written, expired or deleted)."""

    code = "blob_missing"


class BlobUnavailable(RetryableError):
    """Raised when the store cannot be reached."""

    code = "blob_unavailable"


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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {key!r} not found in {self.url}") from None
        except OSError as e:
            raise BlobUnavailable(f"cannot read blob {key!r}: {e.strerror}") from e

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class RedisBlobStore:
    """Redis keys with a TTL, for small clusters that already run Redis."""

    def __init__(self, url: str, ttl_s: int = 3600, prefix: str = "farm:blob:") -> None:
        import redis

        self.url = url
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url)
        self._errors: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

    def put(self, key: str, data: bytes) -> None:
        try:
            self._redis.set(self.prefix + _check_key(key), data, ex=self.ttl_s)
        except self._errors as e:
            raise BlobUnavailable(f"Redis blob store unreachable: {e}") from e

    def get(self, key: str) -> bytes:
        try:
            data = self._redis.get(self.prefix + _check_key(key))
        except self._errors as e:
            raise BlobUnavailable(f"Redis blob store unreachable: {e}") from e
        if data is None:
            raise BlobMissing(f"blob {key!r} not found (expired after {self.ttl_s} s?)")
        return bytes(data)  # type: ignore[arg-type]

    def delete(self, key: str) -> None:
        self._redis.delete(self.prefix + _check_key(key))

    def exists(self, key: str) -> bool:
        return bool(self._redis.exists(self.prefix + _check_key(key)))

    def close(self) -> None:
        self._redis.close()


class S3BlobStore:
    """An S3-compatible bucket through boto3 (``pip install livepeer-farm[s3]``).

    Credentials come from boto3's usual sources (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role). Every failure but a missing key
    is :class:`BlobUnavailable` naming the bucket: a wrong bucket or credentials are never
    read as "the blob is not there".
    """

    #: Error codes S3 gives for a key that is not in the bucket (HEAD answers a bare 404).
    _MISSING = frozenset({"NoSuchKey", "404", "NotFound"})

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

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _missing(self, e: Exception) -> bool:
        if not isinstance(e, self._client_error):
            return False
        return e.response.get("Error", {}).get("Code") in self._MISSING

    def _unavailable(self, what: str, key: str, e: Exception) -> BlobUnavailable:
        return BlobUnavailable(f"S3 {what} of {key!r} in {self.url} failed: {e}")

    def put(self, key: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except self._errors as e:
            raise self._unavailable("put", key, e) from e

    def get(self, key: str) -> bytes:
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(obj["Body"].read())
        except self._errors as e:
            if self._missing(e):
                raise BlobMissing(f"blob {key!r} not found in {self.url}") from e
            raise self._unavailable("get", key, e) from e

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            raise self._unavailable("delete", key, e) from e

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            if not self._missing(e):
                raise self._unavailable("head", key, e) from e
        else:
            return True
        # HEAD answers a bare 404 for a missing bucket too: make sure it is only the key.
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except self._errors as e:
            raise self._unavailable("head", key, e) from e
        return False


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
