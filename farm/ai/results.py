"""AI job results: the runner's response with its media moved into the blob store."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from dataclasses import dataclass
from typing import Any

from farm.blobstore import BlobStore
from farm.errors import FetchFailed, ResultTooLarge, RunnerFailed
from farm.fetch import FetchPolicy, SafeFetcher

__all__ = ["BLOB_SCHEME", "MAX_RESULT_BYTES", "AIMedia", "AIResult", "blob_key", "rehost"]

#: Media URLs in results point into the farm's blob store: ``farm-blob:<key>``.
BLOB_SCHEME = "farm-blob:"
#: The most media one result may hold, all files together, unless the caller says otherwise.
MAX_RESULT_BYTES = 512 * 1024 * 1024
#: Extensions for what ai-runner answers, where the system's mime table lacks them.
#: File extensions of the media AI results carry, by content type (and back).
MEDIA_EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/mpeg": ".mp3",
}
MEDIA_TYPES: dict[str, str] = {ext: kind for kind, ext in reversed(MEDIA_EXTENSIONS.items())}


@dataclass(frozen=True, slots=True)
class AIMedia:
    """One result file in the blob store."""

    key: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class AIResult:
    """A finished AI job: the runner's response with media URLs as ``farm-blob:<key>``."""

    job_id: str
    pipeline: str
    model_id: str
    worker: str
    response: dict[str, Any]
    media: tuple[AIMedia, ...]

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> AIResult:
        return cls(
            job_id=payload["job_id"],
            pipeline=payload["pipeline"],
            model_id=payload["model_id"],
            worker=payload["worker"],
            response=payload["response"],
            media=tuple(AIMedia(**m) for m in payload["media"]),
        )


def blob_key(url_or_key: str) -> str:
    """The blob key of a ``farm-blob:`` URL (a bare key is returned as it is)."""
    return url_or_key[len(BLOB_SCHEME) :] if url_or_key.startswith(BLOB_SCHEME) else url_or_key


def _fetch(url: str, limit: int, policy: FetchPolicy) -> tuple[bytes, str]:
    """The bytes and media type at ``url`` (data: or http(s):), at most ``limit`` bytes."""

    def too_large(size: str) -> ResultTooLarge:
        return ResultTooLarge(
            f"the runner's result {url[:80]} is {size}; a result may hold {limit} bytes"
        )

    if url.startswith("data:"):
        header, _, body = url[5:].partition(",")
        content_type = header.split(";")[0] or "application/octet-stream"
        if len(body) * 3 // 4 > limit + 3:  # base64 holds 3 bytes in 4, less its padding
            raise too_large(f"about {len(body) * 3 // 4} bytes")
        try:
            data = base64.b64decode(body, validate=True) if ";base64" in header else body.encode()
        except binascii.Error as e:
            raise RunnerFailed(f"runner answered a bad data URL: {e}") from e
        if len(data) > limit:
            raise too_large(f"{len(data)} bytes")
        return data, content_type
    # The runner's URLs are fetched as a caller's are: the runner's own host is allowed,
    # loopback and private addresses elsewhere are not (FARM_FETCH_ALLOW aside).
    fetcher = SafeFetcher(policy, timeout=60.0)
    try:
        with fetcher.stream(url) as response:
            if response.status_code != 200:
                raise RunnerFailed(
                    f"the runner's result {url[:80]} answered HTTP {response.status_code}"
                )
            declared = response.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise too_large(f"{declared} bytes")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise too_large(f"over {limit} bytes")
                chunks.append(chunk)
            content_type = response.headers.get("content-type", "application/octet-stream")
    except FetchFailed as e:
        raise RunnerFailed(f"could not fetch the runner's result {url[:80]}: {e}") from e
    finally:
        fetcher.close()
    return b"".join(chunks), content_type.split(";")[0]


def rehost(
    response: dict[str, Any],
    job_id: str,
    blobs: BlobStore,
    max_bytes: int = MAX_RESULT_BYTES,
    policy: FetchPolicy | None = None,
) -> tuple[dict[str, Any], list[AIMedia]]:
    """The response with every media ``url`` stored in the blob store and replaced by
    ``farm-blob:<key>``, and the stored media.

    Raises ResultTooLarge when the media, all together, hold more than ``max_bytes``.
    http(s) media are fetched under ``policy`` (farm.fetch; public addresses only by default).
    """
    policy = policy or FetchPolicy()
    media: list[AIMedia] = []

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        out = {k: walk(v) for k, v in value.items()}
        url = out.get("url")
        if isinstance(url, str) and url.startswith(("data:", "http://", "https://")):
            data, content_type = _fetch(url, max_bytes - sum(m.size for m in media), policy)
            ext = (
                MEDIA_EXTENSIONS.get(content_type)
                or mimetypes.guess_extension(content_type)
                or ".bin"
            )
            key = f"ai/{job_id}/out/{len(media)}{ext}"
            blobs.put(key, data)
            media.append(AIMedia(key, content_type, len(data)))
            out["url"] = BLOB_SCHEME + key
        return out

    try:
        return walk(response), media
    except Exception:
        for m in media:  # a refused result leaves none of its media behind
            blobs.delete(m.key)
        raise
