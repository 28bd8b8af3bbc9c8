"""The error responses routes declare in the OpenAPI schema, in the shapes the gateway sends.

Every route answers errors as ``{"errors": [message], "code": code}`` (:class:`ErrorBody`)
except the AI routes, which answer go-livepeer's ``{"error": {"message": ...}}``
(:class:`AIErrorBody`). Request validation is 400 with that body, never FastAPI's 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["AIErrorBody", "ErrorBody", "errors"]


class ErrorBody(BaseModel):
    """The gateway's error: one or more messages and a machine-readable code."""

    errors: list[str]
    code: str


class AIErrorMessage(BaseModel):
    message: str


class AIErrorBody(BaseModel):
    """go-livepeer's AI error (500 and 503 carry fixed messages)."""

    error: AIErrorMessage


_WHY = {
    400: "The URL, a header or the body is malformed.",
    401: "No API key, or a wrong or revoked one.",
    402: "Not enough credit for the job's estimate.",
    403: "Denied: the admin token, the auth webhook or the playback token.",
    404: "No such task, session, key or output.",
    413: "The body is over the upload cap.",
    416: "The Range starts past the end of the file.",
    422: "The input cannot be transcoded.",
    429: "Over the key's request rate or concurrent jobs.",
    503: "A dependency (database, orchestrators, auth webhook) cannot serve the request.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def errors(*statuses: int, ai: bool = False) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` argument of a route that may answer each of ``statuses``."""
    model = AIErrorBody if ai else ErrorBody
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": model, "description": _WHY[status]}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out
