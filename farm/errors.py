"""The farm's error hierarchy.

Every error the farm raises on purpose derives from :class:`FarmError`. Whether a failure
is worth retrying is a type, not a flag: :class:`PermanentError` (the caller's input is at
fault; it fails again anywhere) and :class:`RetryableError` (another attempt or worker may
succeed) are mapped onto Celery retries in one place and onto HTTP status codes in one
handler. A failure crosses the broker, the job table and the node API as its ``code``;
:func:`error_class` and :func:`rebuild` give it its type back, from the classes themselves,
so no list of codes is kept by hand.
"""

from __future__ import annotations

__all__ = [
    "CAPACITY_ERRORS",
    "AIRequestInvalid",
    "AccessDenied",
    "ConfigError",
    "CredentialRevoked",
    "EncoderUnavailable",
    "EngineFailure",
    "FarmError",
    "FetchFailed",
    "InputCorrupt",
    "InputInvalid",
    "InputMissing",
    "InputTooLong",
    "InsufficientCapacity",
    "InvalidSecret",
    "JobError",
    "JobExists",
    "JobNotFound",
    "NoCapacity",
    "NodeUnreachable",
    "PayloadTooLarge",
    "PermanentError",
    "ProfileInvalid",
    "RegistrationInvalid",
    "RemoteUnsupported",
    "RequestInvalid",
    "ResultTooLarge",
    "RetryableError",
    "RunnerFailed",
    "ServiceUnavailable",
    "TranscodeTimeout",
    "UnsupportedCodec",
    "VerificationFailed",
    "WorkerFailed",
    "error_class",
    "rebuild",
]

#: code -> the class that declared it first (see FarmError.__init_subclass__).
_BY_CODE: dict[str, type[FarmError]] = {}


class FarmError(Exception):
    """Raised for any failure the farm recognises; the root of the hierarchy."""

    #: Short machine-readable code, stable across versions, used in metrics and API bodies.
    code: str = "farm_error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A class is rebuilt from its code when it is the farm's (its failures are what cross
        # the broker, the job table and the node API; the gateway's errors are answers at its
        # own edge, never read back), declares a code and is made from a message alone. The
        # first class to declare a code owns it: this module is loaded before any other that
        # subclasses FarmError, and a later class reusing a code means the same failure.
        farms = cls.__module__.partition(".")[0] == "farm"
        if farms and "code" in vars(cls) and cls.__init__ is FarmError.__init__:
            _BY_CODE.setdefault(cls.code, cls)


class JobNotFound(FarmError):
    """Raised when a job id is not in the job table."""

    code = "job_not_found"


class JobExists(FarmError):
    """Raised by ``JobStore.create`` when the job id is taken (nothing is changed)."""

    code = "job_exists"


class ConfigError(FarmError):
    """Raised when settings or command-line options are invalid."""

    code = "config_invalid"


class JobError(FarmError):
    """Raised when a job cannot be completed."""

    code = "job_failed"


class PermanentError(JobError):
    """Raised when retrying the same job cannot succeed (bad input, bad profile)."""

    code = "permanent"


class RetryableError(JobError):
    """Raised when the same job may succeed on another attempt or another worker."""

    code = "retryable"


class ProfileInvalid(PermanentError):
    """Raised when a transcoding profile is unknown or has invalid fields."""

    code = "profile_invalid"


class InputInvalid(PermanentError):
    """Raised when the input is empty, not a media container, or has no video."""

    code = "input_invalid"


class InputCorrupt(PermanentError):
    """Raised when the input is truncated or its video cannot be decoded cleanly."""

    code = "input_corrupt"


class InputTooLong(PermanentError):
    """Raised when the input lasts longer than the engine accepts."""

    code = "input_too_long"


class InputMissing(PermanentError):
    """Raised when a job's input is no longer in the blob store (expired or deleted)."""

    code = "input_missing"


class UnsupportedCodec(PermanentError):
    """Raised when the input's codec or the requested output codec is not supported."""

    code = "unsupported_codec"


class EncoderUnavailable(RetryableError):
    """Raised when a hardware encoder was chosen but failed to open on this worker."""

    code = "encoder_unavailable"


class VerificationFailed(RetryableError):
    """Raised when a rendition fails verification; another attempt may produce a good one."""

    code = "verification_failed"


class TranscodeTimeout(RetryableError):
    """Raised when a transcode runs past its deadline."""

    code = "timeout"


class EngineFailure(RetryableError):
    """Raised when the media library fails on input that looked valid."""

    code = "engine_failure"


class WorkerFailed(RetryableError):
    """Raised when an attempt failed with an error the farm does not know (a bug, an
    unmapped OS error); its class and message are kept, and another attempt may succeed."""

    code = "worker_error"


class NoCapacity(FarmError):
    """Raised when no live worker can serve what a job needs."""

    code = "no_capacity"


class AIRequestInvalid(PermanentError):
    """Raised when an AI runner refuses a request (ai-runner's 400 or 422) or its input is bad."""

    code = "invalid_request"


class InsufficientCapacity(RetryableError):
    """Raised when a worker's runner for an AI model is full, down or answering ERROR."""

    code = "insufficient_capacity"


class RunnerFailed(RetryableError):
    """Raised when an AI runner cannot be reached or fails a request (5xx, bad answer)."""

    code = "runner_failed"


class ResultTooLarge(PermanentError):
    """Raised when an AI runner's result media is larger than the worker accepts."""

    code = "result_too_large"


class InvalidSecret(FarmError):
    """Raised when a transcoder registers with a wrong orchSecret ("invalid secret")."""

    code = "invalid_secret"


class CredentialRevoked(FarmError):
    """Raised when a transcoder's credential is unknown, revoked (evicted) or expired."""

    code = "credential_revoked"


class AccessDenied(FarmError):
    """Raised when a transcoder asks for a job or blob it does not hold, or a URL's signature
    is wrong or expired."""

    code = "access_denied"


class RegistrationInvalid(FarmError):
    """Raised when a registration is malformed, e.g. zero or negative capacity."""

    code = "registration_invalid"


class RequestInvalid(FarmError):
    """Raised when a request to a farm HTTP API is malformed: not JSON, a missing field, a
    wrong type, an out-of-range value, or a result that is not what the job asked for."""

    code = "request_invalid"


class PayloadTooLarge(PermanentError):
    """Raised when an upload is larger than the node accepts (``FARM_MAX_BLOB_BYTES``)."""

    code = "payload_too_large"


class RemoteUnsupported(ConfigError):
    """Raised when remote transcoders cannot attach to this cluster (no Redis broker, no TLS)."""

    code = "remote_unsupported"


class NodeUnreachable(RetryableError):
    """Raised when a remote transcoder cannot reach its orchestrator's node API."""

    code = "node_unreachable"


class ServiceUnavailable(RetryableError):
    """Raised when a service the farm keeps its state in (the database, Redis) cannot be
    reached; the caller may try again."""

    code = "service_unavailable"


class FetchFailed(PermanentError):
    """Raised when a URL fetched for a caller is refused (not a public address, see
    farm.fetch), cannot be reached, or does not answer with what was asked for."""

    code = "fetch_failed"


_BY_CODE[FarmError.code] = FarmError

#: Failures that mean the model or the cluster is full or down now, not broken: the work goes
#: elsewhere, and whoever answered is not suspended for it.
CAPACITY_ERRORS: tuple[type[FarmError], ...] = (NoCapacity, InsufficientCapacity)


def error_class(code: str) -> type[FarmError]:
    """The class a failure's ``code`` names; :class:`JobError` for a code no class declares
    (a failure of a job, neither permanent nor retryable as far as this process knows)."""
    return _BY_CODE.get(code, JobError)


def rebuild(code: str, message: str) -> FarmError:
    """The failure a code and a message stand for, as an error of the class the code names
    (:func:`error_class`); it keeps ``code`` even where the code is unknown."""
    error = error_class(code)(message)
    error.code = code
    return error
