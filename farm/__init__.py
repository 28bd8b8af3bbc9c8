"""The farm: one orchestrator's Celery cluster, its media engine and its node API."""

__all__ = ["__version__"]

__version__ = "0.1.0"
