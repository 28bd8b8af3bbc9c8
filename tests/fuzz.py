"""How the property-based tests run: reproducible from run to run (derandomised, no example
database), with no deadline (a request to a real service takes what it takes), and as many
examples as the test asks, or as its environment variable says for a longer run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["fuzz_settings"]


def fuzz_settings(examples: int, variable: str | None = None) -> settings:
    """Settings for ``examples`` examples, or ``$variable``'s number when it is set."""
    if variable is not None:
        examples = int(os.environ.get(variable, str(examples)))
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
