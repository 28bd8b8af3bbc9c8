"""The error body of go-livepeer's AI gateway: ``{"error": {"message": ...}}``."""

from __future__ import annotations

from typing import Any

__all__ = ["livepeer_error_body"]

#: go-livepeer hides the cause of these two behind fixed messages.
_FIXED = {500: "Internal Server Error", 503: "Service Unavailable Error"}


def livepeer_error_body(status: int, message: str) -> dict[str, Any]:
    """The body go-livepeer's AI routes answer an error with (fixed text for 500 and 503)."""
    return {"error": {"message": _FIXED.get(status, message)}}
