"""Auth tokens: the session an orchestrator hands a gateway in ``OrchestratorInfo``.

go-livepeer's token is HMAC-SHA256 over the session id and the expiry (minimal big-endian
bytes), keyed by 32 random bytes drawn when the process starts. Here the key is derived from
the cluster's secret, so every node process behind one service URI accepts every token, and a
node restart does not end the gateways' sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Final

from chain.payment import uint_bytes
from farm.golivepeer import net_pb2

__all__ = ["TOKEN_TTL_S", "AuthTokens", "TokenRefused", "token_mac"]

#: go-livepeer's authTokenValidPeriod.
TOKEN_TTL_S: Final = 30 * 60


class TokenRefused(ValueError):
    """Raised when a request's auth token is missing, forged or expired (go-livepeer's text)."""


def token_mac(key: bytes, session_id: str, expiration: int) -> bytes:
    """HMAC-SHA256(key, session_id ‖ expiration as minimal big-endian bytes)."""
    return hmac.digest(key, session_id.encode() + uint_bytes(expiration), hashlib.sha256)


class AuthTokens:
    """Issues and checks the tokens of one cluster."""

    def __init__(self, secret: bytes, ttl_s: int = TOKEN_TTL_S) -> None:
        self._key = hmac.digest(secret, b"farm orchestrator auth token", hashlib.sha256)
        self.ttl_s = ttl_s

    def issue(self, now: float | None = None) -> net_pb2.AuthToken:
        """A new session: 8 hex characters, valid for ``ttl_s``."""
        session_id = secrets.token_hex(4)
        expiration = int(now if now is not None else time.time()) + self.ttl_s
        return net_pb2.AuthToken(
            token=token_mac(self._key, session_id, expiration),
            session_id=session_id,
            expiration=expiration,
        )

    def check(
        self, token: net_pb2.AuthToken | None, *, now: float | None = None, expiry: bool = True
    ) -> str:
        """The token's session id; TokenRefused when it is missing, forged or (with ``expiry``)
        past its expiration."""
        if token is None or not token.session_id:
            raise TokenRefused("missing auth token")
        if token.expiration < 0 or not hmac.compare_digest(
            token.token, token_mac(self._key, token.session_id, token.expiration)
        ):
            raise TokenRefused("invalid auth token")
        if expiry and (now if now is not None else time.time()) > token.expiration:
            raise TokenRefused("expired auth token")
        return token.session_id
