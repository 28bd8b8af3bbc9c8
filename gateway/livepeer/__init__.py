"""Buying transcoding from any Livepeer orchestrator over go-livepeer's network protocol."""

from gateway.livepeer.client import (
    Broadcaster,
    LivepeerOrchestrator,
    LivepeerResult,
    OrchestratorRefused,
    OrchestratorUnreachable,
    ResultInvalid,
)

__all__ = [
    "Broadcaster",
    "LivepeerOrchestrator",
    "LivepeerResult",
    "OrchestratorRefused",
    "OrchestratorUnreachable",
    "ResultInvalid",
]
