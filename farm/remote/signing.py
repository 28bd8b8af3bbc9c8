"""Short-lived signed URLs for segment inputs and renditions.

A URL carries the transcoder id, an expiry and an HMAC-SHA256 over the method, the blob key,
the expiry and the transcoder id, keyed by a key derived from the cluster secret. The node
answers a signed URL without any other credential, as an S3 presigned URL works, but only
until it expires and only while that transcoder's credential stands.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote

from farm.errors import AccessDenied

__all__ = ["BLOB_PREFIX", "SignedUrl", "UrlSigner"]

#: Where the node API serves signed blob URLs.
BLOB_PREFIX = "/blobs/"


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """The parts of one signed URL."""

    method: str
    key: str
    expires: int
    transcoder: str
    signature: str

    @property
    def path(self) -> str:
        """Path and query, relative to the node API's base URL."""
        return (
            f"{BLOB_PREFIX}{quote(self.key)}?t={quote(self.transcoder)}"
            f"&e={self.expires}&s={self.signature}"
        )


class UrlSigner:
    """Signs and checks blob URLs with a key derived from the cluster secret."""

    def __init__(self, secret: str, ttl_s: float) -> None:
        # A key of its own, so a leaked URL signature says nothing about the orchSecret.
        self._key = hmac.new(secret.encode(), b"farm signed blob urls v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def _mac(self, method: str, key: str, expires: int, transcoder: str) -> str:
        message = f"{method.upper()}\n{key}\n{expires}\n{transcoder}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, key: str, transcoder: str, now: float | None = None) -> SignedUrl:
        expires = int((now or time.time()) + self.ttl_s)
        mac = self._mac(method, key, expires, transcoder)
        return SignedUrl(method.upper(), key, expires, transcoder, mac)

    def check(
        self,
        method: str,
        key: str,
        transcoder: str,
        expires: int,
        signature: str,
        now: float | None = None,
    ) -> None:
        """AccessDenied unless the signature matches and has not expired."""
        want = self._mac(method, key, expires, transcoder)
        if not hmac.compare_digest(want, signature):
            raise AccessDenied("bad signature")
        if expires < (now or time.time()):
            raise AccessDenied("signed URL expired")
