"""The gateway's errors, each with the HTTP status it maps to (:func:`http_status`, once)."""

from __future__ import annotations

from farm.errors import (
    FarmError,
    JobNotFound,
    NoCapacity,
    PermanentError,
    ProfileInvalid,
    RetryableError,
    rebuild,
)

__all__ = [
    "AuthFailed",
    "BadRequest",
    "Forbidden",
    "GatewayError",
    "InsufficientCredit",
    "NoOrchestrators",
    "NotFound",
    "RangeNotSatisfiable",
    "RateLimited",
    "TranscodeFailed",
    "Unavailable",
    "UploadTooLarge",
    "http_status",
    "status_of",
]


class GatewayError(FarmError):
    """Raised for any failure the gateway answers with an HTTP error."""

    status = 500
    code = "gateway_error"
    retry_after: float | None = None

    def with_retry_after(self, seconds: float) -> GatewayError:
        self.retry_after = seconds
        return self

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides ``Retry-After``."""
        return {}


class BadRequest(GatewayError):
    """Raised when the request's URL, headers or body are malformed."""

    status = 400
    code = "bad_request"


class AuthFailed(GatewayError):
    """Raised when the request has no valid API key."""

    status = 401
    code = "unauthorized"


class InsufficientCredit(GatewayError):
    """Raised when the key's balance cannot cover the job's estimate."""

    status = 402
    code = "insufficient_credit"


class Forbidden(GatewayError):
    """Raised when the auth webhook, an admin check or a playback token denies the request."""

    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    """Raised when the requested task, session or key does not exist."""

    status = 404
    code = "not_found"


class UploadTooLarge(GatewayError):
    """Raised when the body exceeds the upload cap."""

    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(GatewayError):
    """Raised when a Range header asks for bytes past the end of the file."""

    status = 416
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the file has {size} bytes")
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class TranscodeFailed(GatewayError):
    """Raised when the input cannot be transcoded (a permanent error: not retried)."""

    status = 422
    code = "transcode_failed"


class RateLimited(GatewayError):
    """Raised when a key exceeds its request rate or its concurrent jobs."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(GatewayError):
    """Raised when a dependency (the auth webhook, the ledger) cannot be reached."""

    status = 503
    code = "unavailable"
    retry_after = 5.0


class NoOrchestrators(Unavailable):
    """Raised when no healthy orchestrator could transcode the segment."""

    code = "no_orchestrators"


def http_status(error: FarmError) -> int:
    """The HTTP status an error is answered with (the one mapping of errors to statuses)."""
    if isinstance(error, GatewayError):
        return error.status
    if isinstance(error, ProfileInvalid):
        return 400
    if isinstance(error, JobNotFound):
        return 404
    if isinstance(error, PermanentError):
        return 422
    if isinstance(error, (NoCapacity, RetryableError)):
        return 503
    return 500


def status_of(code: str) -> int:
    """The HTTP status a failure known only by its code is answered with: the gateway
    error's that declares the code, else that of the farm error the code names."""
    classes: list[type[GatewayError]] = [GatewayError]
    while classes:
        cls = classes.pop(0)
        if cls.code == code:
            return cls.status
        classes.extend(cls.__subclasses__())
    return http_status(rebuild(code, code))
