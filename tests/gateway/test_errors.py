"""The gateway answers a failure known only by its code with the status of its class."""

from __future__ import annotations

import pytest

from gateway.errors import status_of


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("transcode_failed", 422),
        ("rate_limited", 429),
        ("input_corrupt", 422),
        ("input_missing", 422),
        ("profile_invalid", 400),
        ("no_orchestrators", 503),
        ("timeout", 503),
        ("job_failed", 500),
        ("ConnectionError", 500),
    ],
)
def test_the_gateway_answers_a_code_with_its_classs_status(code: str, status: int) -> None:
    assert status_of(code) == status
