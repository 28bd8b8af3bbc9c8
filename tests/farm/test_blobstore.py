"""Blob stores chosen by URL: local directory and Redis with TTL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from farm.blobstore import BlobMissing, RedisBlobStore, blob_store_from_url
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


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="unsupported blob store URL"):
        blob_store_from_url("ftp://example/x")
