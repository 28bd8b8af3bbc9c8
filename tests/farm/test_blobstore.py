"""Blob stores chosen by URL: local directory and Redis with TTL."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from farm.blobstore import (
    BlobMissing,
    BlobStoreFailed,
    BlobUnavailable,
    RedisBlobStore,
    S3BlobStore,
    blob_store_from_url,
)
from farm.errors import ConfigError


def test_local_store_roundtrip_and_atomic_overwrite(tmp_path: Path) -> None:
    store = blob_store_from_url(f"file://{tmp_path}/blobs")
    store.put("jobs/a/in", b"one")
    store.put("jobs/a/in", b"two")  # a redelivered task overwrites the same key
    assert store.get("jobs/a/in") == b"two" and store.exists("jobs/a/in")
    assert not [p for p in (tmp_path / "blobs").rglob(".tmp-*")]
    store.delete("jobs/a/in")
    with pytest.raises(BlobMissing):
        store.get("jobs/a/in")
    with pytest.raises(ValueError):
        store.put("../escape", b"x")


def test_redis_store_with_ttl(redis_url: str) -> None:
    store = blob_store_from_url(redis_url + "?ttl=1")
    assert isinstance(store, RedisBlobStore) and store.ttl_s == 1
    try:
        store.put("jobs/b/in", b"\x00" * 1000)
        assert store.get("jobs/b/in") == b"\x00" * 1000
        time.sleep(2.1)
        with pytest.raises(BlobMissing, match="expired"):
            store.get("jobs/b/in")
    finally:
        store.close()


def test_local_store_errors_are_the_farms(tmp_path: Path) -> None:
    store = blob_store_from_url(f"file://{tmp_path}/blobs")
    (tmp_path / "blobs" / "jobs").write_bytes(b"a file where a directory belongs")
    # Every operation's OS error is a farm error that names the key and the OS's reason.
    with pytest.raises(BlobStoreFailed, match=r"cannot write blob 'jobs/a/out/x.ts'.*Error\)"):
        store.put("jobs/a/out/x.ts", b"x")
    with pytest.raises(BlobStoreFailed, match="Not a directory"):
        store.get("jobs/a/in")
    with pytest.raises(BlobStoreFailed, match="Not a directory"):
        store.delete("jobs/a/in")
    (tmp_path / "blobs" / "dir").mkdir()
    with pytest.raises(BlobStoreFailed, match="Is a directory"):
        store.get("dir")
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))


def test_redis_store_errors_are_the_farms(redis_url: str) -> None:
    store = RedisBlobStore(redis_url)
    try:
        store._redis.rpush("farm:blob:jobs/c/in", b"not a string")
        # Redis answered, with an error: waiting does not help.
        with pytest.raises(BlobStoreFailed, match="WRONGTYPE"):
            store.get("jobs/c/in")
    finally:
        store.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    gone = RedisBlobStore(f"redis://127.0.0.1:{closed}/0")
    try:
        for op in (lambda: gone.put("k", b"x"), lambda: gone.get("k"), lambda: gone.exists("k")):
            with pytest.raises(BlobUnavailable, match="unreachable"):
                op()
    finally:
        gone.close()


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="unsupported blob store URL"):
        blob_store_from_url("ftp://example/x")


def test_an_unreachable_s3_store_is_a_blink(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    store = S3BlobStore(
        "bucket",
        "farm",
        endpoint_url=f"http://127.0.0.1:{closed}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    for op in (
        lambda: store.put("jobs/a/in", b"x"),
        lambda: store.get("jobs/a/in"),
        lambda: store.exists("jobs/a/in"),
        lambda: store.delete("jobs/a/in"),
    ):
        with pytest.raises(BlobUnavailable, match="S3 cannot"):
            op()
