"""Whole flows through real processes: gateway, orchestrator cluster, workers and runners."""
