"""Result media moved into the gateway's own storage, with URLs rewritten to the gateway's.

A farm answers with ``farm-blob:<key>`` URLs that only the farm can read. The gateway copies
each one into its blob store under ``ai/<request id>/`` and replaces the URL with the route
that serves it, ``/ai/media/<request id>/<name>``, as go-livepeer re-hosts results in its
object store. Request ids are random, so a URL is as private as the response it came in.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Mapping
from typing import Any

from farm.blobstore import BlobStore
from farm.protocol import MEDIA_EXTENSIONS, MEDIA_TYPES

__all__ = ["FARM_BLOB", "MEDIA_NAME", "MEDIA_ROUTE", "media_type", "rehost"]

FARM_BLOB = "farm-blob:"
MEDIA_ROUTE = "/ai/media"
#: Names the gateway gives stored media: ``<n>.<ext>``.
MEDIA_NAME = re.compile(r"[0-9]{1,6}\.[a-z0-9]{1,8}")


def rehost(
    response: Mapping[str, Any],
    content_types: Mapping[str, str],
    fetch: Callable[[str], bytes],
    blobs: BlobStore,
    request_id: str,
) -> dict[str, Any]:
    """A copy of ``response`` whose farm URLs point at media copied into ``blobs``.

    ``content_types`` maps farm keys to their media type; ``fetch`` reads a farm key.
    """
    count = 0

    def walk(value: Any, key: str | None = None) -> Any:
        nonlocal count
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if key == "url" and isinstance(value, str) and value.startswith(FARM_BLOB):
            farm_key = value[len(FARM_BLOB) :]
            name = f"{count}{_extension(content_types.get(farm_key), farm_key)}"
            count += 1
            blobs.put(f"ai/{request_id}/{name}", fetch(farm_key))
            return f"{MEDIA_ROUTE}/{request_id}/{name}"
        return value

    rewritten: dict[str, Any] = walk(dict(response))
    return rewritten


def _extension(content_type: str | None, key: str) -> str:
    content_type = content_type or mimetypes.guess_type(key)[0] or ""
    ext = MEDIA_EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type)
    return ext if ext and MEDIA_NAME.fullmatch(f"0{ext}") else ".bin"


def media_type(name: str) -> str:
    """The media type a stored name is served with."""
    known = MEDIA_TYPES.get(name[name.rfind(".") :])
    return known or mimetypes.guess_type(name)[0] or "application/octet-stream"
