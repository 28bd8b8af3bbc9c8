"""The job table: the source of truth for every accepted job and each of its attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Attempt", "Base", "Job", "JobState", "Meta"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobState:
    """The states a job moves through; ``done`` and ``failed`` are final."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    FINAL = (DONE, FAILED)


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One accepted job: what to do, where it was sent, and how it ended."""

    __tablename__ = "farm_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="transcode")
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED, index=True)
    queue: Mapped[str] = mapped_column(String(128))
    #: The task message's payload, republished verbatim by the reconciler.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    task_id: Mapped[str] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    publishes: Mapped[int] = mapped_column(Integer, default=1)
    #: Seconds a run may take before the reconciler republishes it.
    timeout_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The registry name of the worker running the job now.
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: Seconds a job may wait in its queue before it is republished.
    queued_timeout_s: Mapped[float] = mapped_column(Float, default=60.0)
    #: Which attempt's result was recorded (the first to finish wins).
    completed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    attempt_log: Mapped[list[Attempt]] = relationship(
        back_populates="job", order_by="Attempt.id", cascade="all, delete-orphan"
    )


class Attempt(Base):
    """One run of a job on one worker."""

    __tablename__ = "farm_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("farm_jobs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(128))
    worker: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    job: Mapped[Job] = relationship(back_populates="attempt_log")


class Meta(Base):
    """Small facts the cluster's processes share, e.g. which broker instance the reconciler
    last saw (farm.brokerwatch)."""

    __tablename__ = "farm_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
