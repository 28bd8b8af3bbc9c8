"""A failure crosses the broker, the job table and the node API as its code, and comes back
as the class that declared the code: no list of codes kept by hand."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

# Every farm module that declares an error class, so that the walk below sees them all.
import farm.blobstore
import farm.cli.listen
import farm.client
import farm.golivepeer.hub
import farm.jobs.store
import farm.orchestrator.service
import farm.registry
import farm.tasks
from farm.blobstore import BlobMissing
from farm.client import JobFailedError
from farm.errors import (
    CAPACITY_ERRORS,
    AIRequestInvalid,
    CredentialRevoked,
    FarmError,
    InputMissing,
    InsufficientCapacity,
    JobError,
    NoCapacity,
    NodeUnreachable,
    PermanentError,
    ResultTooLarge,
    RetryableError,
    error_class,
    rebuild,
)
from farm.jobs.models import utcnow
from farm.jobs.store import JobNotFound, JobView
from farm.orchestrator.ai import _failed
from farm.remote.node_client import _raise_for
from gateway.dispatch import is_permanent


def _subclasses(cls: type[FarmError]) -> Iterator[type[FarmError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _rebuildable() -> list[type[FarmError]]:
    """The farm's classes made from a message alone, each declaring its own code."""
    return [
        cls
        for cls in [FarmError, *_subclasses(FarmError)]
        if cls.__module__.startswith("farm.")
        and "code" in vars(cls)
        and cls.__init__ is FarmError.__init__
    ]


def _kind(cls: type[FarmError]) -> str:
    return (
        "permanent"
        if issubclass(cls, PermanentError)
        else "retryable"
        if issubclass(cls, RetryableError)
        else "neither"
    )


@pytest.mark.parametrize("cls", _rebuildable(), ids=lambda cls: cls.__name__)
def test_every_code_comes_back_as_the_class_that_declared_it(cls: type[FarmError]) -> None:
    error = rebuild(cls.code, "what went wrong")
    assert error.code == cls.code and str(error) == "what went wrong"
    owner = error_class(cls.code)
    if owner.__module__ == cls.__module__ or owner is cls:
        assert type(error) is cls
    else:
        # A later class reusing a code (farm.tasks.JobFailed's job_failed) means the same
        # failure as the class that declared it first: the same kind, at least.
        assert type(error) is owner and _kind(owner) == _kind(cls)


def test_no_two_classes_of_the_hierarchy_share_a_code() -> None:
    classes = [cls for cls in _rebuildable() if cls.__module__ == "farm.errors"]
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)) and len(codes) > 30


def test_classes_declared_outside_farm_errors_are_known_by_their_code() -> None:
    assert error_class("blob_missing") is BlobMissing
    assert error_class("job_not_found") is JobNotFound
    assert error_class("transcoder_lost") is farm.golivepeer.hub.TranscoderLost
    assert error_class("registry_unavailable") is farm.registry.RegistryUnavailable


@pytest.mark.parametrize("cls", [InputMissing, ResultTooLarge])
def test_a_missing_input_and_a_result_too_large_are_permanent(cls: type[FarmError]) -> None:
    assert issubclass(error_class(cls.code), PermanentError)
    assert is_permanent(rebuild(cls.code, "gone"))
    assert is_permanent(_failed_job(cls.code))


def test_an_unknown_code_is_a_job_error_that_keeps_its_code() -> None:
    error = rebuild("something_new", "a newer worker's failure")
    assert type(error) is JobError and error.code == "something_new"
    assert not isinstance(error, (PermanentError, RetryableError))
    assert not is_permanent(_failed_job("something_new"))
    assert error_class("") is JobError


def test_a_failed_jobs_code_decides_whether_the_gateway_retries_it() -> None:
    assert is_permanent(_failed_job("input_corrupt"))
    assert is_permanent(_failed_job("invalid_request"))
    assert not is_permanent(_failed_job("timeout"))
    assert not is_permanent(_failed_job("job_failed"))
    assert not is_permanent(_failed_job("insufficient_capacity"))


def test_the_gateways_own_errors_are_not_rebuilt() -> None:
    # gateway.errors is loaded (through gateway.dispatch), yet its codes stay unknown here:
    # they are answers at the gateway's edge, never read back from a job.
    assert error_class("unauthorized") is JobError
    assert error_class("not_found") is JobError


def test_capacity_failures_are_found_by_their_code() -> None:
    assert issubclass(error_class("no_capacity"), CAPACITY_ERRORS)
    assert issubclass(error_class("insufficient_capacity"), CAPACITY_ERRORS)
    assert not issubclass(error_class("runner_failed"), CAPACITY_ERRORS)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NoCapacity("full"), 503),
        (InsufficientCapacity("runner full"), 503),
        (AIRequestInvalid("bad prompt"), 400),
        (RetryableError("broken"), 500),
    ],
    ids=["no_capacity", "insufficient_capacity", "invalid_request", "other"],
)
def test_the_orchestrator_answers_an_ai_job_by_its_failures_class(
    error: FarmError, status: int
) -> None:
    assert _failed(error).status == status
    assert _failed(_failed_job(error.code)).status == status


def _answer(status: int, code: str, message: str = "refused") -> httpx.Response:
    body = json.dumps({"error": code, "message": message}).encode()
    return httpx.Response(status, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "invalid_secret", farm.errors.InvalidSecret),
        (401, "credential_revoked", CredentialRevoked),
        (403, "access_denied", farm.errors.AccessDenied),
        (413, "payload_too_large", farm.errors.PayloadTooLarge),
        (404, "job_not_found", JobNotFound),
        (404, "blob_missing", BlobMissing),
        (501, "remote_unsupported", farm.errors.RemoteUnsupported),
        # Retryable or unknown: the node is unusable for now, and the transcoder backs off.
        (503, "service_unavailable", NodeUnreachable),
        (404, "not_found", NodeUnreachable),
        (401, "unauthorized", CredentialRevoked),
    ],
)
def test_the_node_apis_refusals_come_back_as_their_classes(
    status: int, code: str, cls: type[FarmError]
) -> None:
    with pytest.raises(FarmError) as e:
        _raise_for(_answer(status, code))
    assert type(e.value) is cls


def _failed_job(code: str) -> JobFailedError:
    job_id = uuid.uuid4().hex
    now = utcnow()
    return JobFailedError(
        JobView(
            id=job_id,
            kind="transcode",
            state="failed",
            queue="transcode.cpu.h264",
            spec={},
            task_id=f"{job_id}.1",
            attempts=1,
            publishes=1,
            result=None,
            error_code=code,
            error=f"{code}: failed",
            created_at=now,
            finished_at=now,
            completed_by=None,
        )
    )
