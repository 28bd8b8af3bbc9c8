"""Jobs in SQL: the source of truth for accepted work."""

from farm.jobs.models import JobState
from farm.jobs.store import (
    AttemptView,
    JobExists,
    JobNotFound,
    JobStore,
    JobView,
    StartOutcome,
    make_engine,
)

__all__ = [
    "AttemptView",
    "JobExists",
    "JobNotFound",
    "JobState",
    "JobStore",
    "JobView",
    "StartOutcome",
    "make_engine",
]
