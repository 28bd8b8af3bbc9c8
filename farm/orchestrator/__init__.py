"""The node as a Livepeer orchestrator: go-livepeer's ``net.Orchestrator`` gRPC service,
``POST /segment`` with ``net.Payment`` tickets, and the rendition URLs it answers with, with
the Celery cluster doing the work (docs/orchestrator.md)."""

from farm.orchestrator.service import Orchestrator, SegmentRefused

__all__ = ["Orchestrator", "SegmentRefused"]
