"""Jobs in SQL: the source of truth for accepted work."""

from farm.jobs.models import JobState
from farm.jobs.store import AttemptView, JobNotFound, JobStore, JobView, StartOutcome, make_engine

__all__ = [
    "AttemptView",
    "JobNotFound",
    "JobState",
    "JobStore",
    "JobView",
    "StartOutcome",
    "make_engine",
]
