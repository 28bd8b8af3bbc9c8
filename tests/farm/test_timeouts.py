"""go-livepeer's segment timeout, max(8 s, 4 x duration), and the places that use it."""

from __future__ import annotations

import pytest

from farm.publish import job_timeout_s, time_limits
from farm.timeouts import MIN_TIMEOUT_S, segment_timeout


@pytest.mark.parametrize(
    ("duration", "timeout"), [(None, 8.0), (0.0, 8.0), (1.0, 8.0), (2.0, 8.0), (2.5, 10.0)]
)
def test_a_segment_gets_four_times_its_duration_and_never_under_eight_seconds(
    duration: float | None, timeout: float
) -> None:
    assert segment_timeout(duration) == timeout


def test_a_multiplier_stretches_it_and_never_shortens_it() -> None:
    assert segment_timeout(3.0, 3.0) == 36.0
    assert segment_timeout(3.0, 0.5) == 12.0
    assert segment_timeout(1.0, 2.0) == 2 * MIN_TIMEOUT_S


def test_the_floor_can_be_set() -> None:
    assert segment_timeout(1.0, floor_s=2.0) == 4.0
    assert segment_timeout(None, 2.0, floor_s=20.0) == 40.0


def test_a_tasks_limits_follow_the_rule() -> None:
    assert time_limits(None) == (8.0, 20.0)
    assert time_limits(4.0) == (16.0, 28.0)
    assert job_timeout_s(4.0) == 26.0
