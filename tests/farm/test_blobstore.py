"""Blob stores chosen by URL: local directory, Redis with TTL and S3."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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
from tests.farm.harness import free_port, wait_for


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


# ---- S3, against a real S3-compatible server (moto's server mode, from the dev extras) ----


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server on a free port for the module, stopped afterwards."""
    if importlib.util.find_spec("moto") is None:
        message = "moto is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"moto's server exited with {server.returncode}")
        try:
            return httpx.get(f"{url}/moto-api/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, what="moto's S3 server")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket's URL, with the credentials boto3 reads from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "farm-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "farm-test-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"farm-{uuid.uuid4().hex[:12]}"
    _s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/segments?endpoint_url={s3_endpoint}&region=us-east-1"


def _s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="farm-test",
        aws_secret_access_key="farm-test-secret",
    )


def test_s3_store_roundtrip_under_its_prefix(s3_url: str, s3_endpoint: str) -> None:
    store = blob_store_from_url(s3_url)
    assert isinstance(store, S3BlobStore)
    assert not store.exists("jobs/a/in")
    store.put("jobs/a/in", b"one")
    store.put("jobs/a/in", b"two")  # a redelivered task overwrites the same key
    store.put("jobs/a/out/low:0", bytes(range(256)) * 1000)
    assert store.get("jobs/a/in") == b"two" and store.exists("jobs/a/in")
    assert store.get("jobs/a/out/low:0") == bytes(range(256)) * 1000
    listed = _s3_client(s3_endpoint).list_objects_v2(Bucket=store.bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "segments/jobs/a/in",
        "segments/jobs/a/out/low:0",
    ]
    store.delete("jobs/a/in")
    store.delete("jobs/a/in")  # deleting what is gone is not an error, as in the other stores
    assert not store.exists("jobs/a/in")
    with pytest.raises(BlobMissing, match="jobs/a/in"):
        store.get("jobs/a/in")
    with pytest.raises(ValueError):
        store.put("../escape", b"x")


def test_s3_store_errors_are_the_farms(s3_url: str, s3_endpoint: str) -> None:
    # A bucket that does not exist is not a missing blob: nothing may read it as "absent".
    wrong = blob_store_from_url(s3_url.replace("s3://farm-", "s3://nobucket-", 1))
    for call in (
        lambda: wrong.put("k", b"x"),
        lambda: wrong.get("k"),
        lambda: wrong.exists("k"),
        lambda: wrong.delete("k"),
    ):
        with pytest.raises((BlobUnavailable, BlobStoreFailed), match="nobucket-"):
            call()
    # An endpoint nothing listens on: unavailable (retryable), quickly, not a hang.
    closed = f"http://127.0.0.1:{free_port()}"
    dead = blob_store_from_url(s3_url.replace(s3_endpoint, closed))
    started = time.monotonic()
    for call in (lambda: dead.put("k", b"x"), lambda: dead.get("k"), lambda: dead.exists("k")):
        with pytest.raises(BlobUnavailable):
            call()
    assert time.monotonic() - started < 30


def test_an_unreachable_s3_store_is_a_blink(tmp_path: Path) -> None:
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
