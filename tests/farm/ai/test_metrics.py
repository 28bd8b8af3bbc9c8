"""AI job metrics through farm.metrics' named functions."""

from __future__ import annotations

from farm import metrics

LABELS = {"pipeline": "upscale", "model_name": "m/x"}


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {**LABELS, **labels}) or 0.0


def test_ai_metrics() -> None:
    before = _value("farm_ai_jobs_total")
    metrics.ai_job_done("upscale", "m/x", 0.3)
    metrics.ai_job_failed("upscale", "m/x", "insufficient_capacity")
    metrics.ai_job_moved("upscale", "m/x", "runner_failed")
    metrics.ai_runner_restarted("upscale", "m/x")
    assert _value("farm_ai_jobs_total") == before + 1
    assert _value("farm_ai_job_seconds_sum") >= 0.3
    assert _value("livepeer_ai_request_errors", error_code="insufficient_capacity") >= 1
    assert _value("farm_ai_jobs_moved_total", error_code="runner_failed") >= 1
    assert _value("farm_ai_runner_restarts_total") >= 1
    assert b"livepeer_ai_request_errors" in metrics.render()
