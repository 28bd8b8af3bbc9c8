"""Runner health from ``/health`` probes, with go-livepeer's worker rules.

ai-runner answers ``LOADING``, ``OK``, ``ERROR`` or ``IDLE``. Two failed probes in a row, or
one ``ERROR``, mark the runner down; ``LOADING`` for longer than the loading limit counts as a
failed probe; ``OK`` and ``IDLE`` mark it up. A failed request counts as a failed probe.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COLD", "DOWN", "LOADING", "UP", "Health"]

UP, LOADING, DOWN, COLD = "up", "loading", "down", "cold"


@dataclass(slots=True)
class Health:
    """One runner's state, moved by probe results."""

    max_failures: int = 2
    loading_timeout_s: float = 180.0
    state: str = LOADING
    failures: int = 0
    loading_since: float | None = None
    #: The last status the runner answered, or why the probe failed.
    last: str = ""

    def observe(self, status: str | None, now: float, why: str = "") -> str:
        """Record one probe: the runner's status, or None when the probe failed."""
        self.last = status or why or "no answer"
        if status in ("OK", "IDLE"):
            self.state, self.failures, self.loading_since = UP, 0, None
        elif status == "ERROR":
            self.state, self.failures = DOWN, self.max_failures
        elif status == "LOADING":
            if self.loading_since is None:
                self.loading_since = now
            if now - self.loading_since > self.loading_timeout_s:
                self.last = f"LOADING for more than {self.loading_timeout_s:g} s"
                self.failed()
            elif self.state != DOWN:
                self.state = LOADING
        else:
            self.failed()
        return self.state

    def failed(self) -> None:
        """Count a failure (a failed probe or request); enough of them mark the runner down."""
        self.failures += 1
        if self.failures >= self.max_failures:
            self.state = DOWN

    def reset(self, now: float) -> None:
        """A (re)started runner: loading from now."""
        self.state, self.failures, self.loading_since = LOADING, 0, now
