"""Routing AI jobs from the capability registry: warm first, then cold; never down or full."""

from __future__ import annotations

from typing import Any

import pytest

from farm.ai.routing import route_ai
from farm.errors import NoCapacity
from farm.registry import Capabilities

MODEL = "stabilityai/stable-diffusion-x4-upscaler"


def _worker(name: str, free_mb: int = 0, **model: Any) -> Capabilities:
    entry = {"pipeline": "upscale", "model_id": MODEL, "warm": False, "capacity": 1, "load": 0}
    entry["status"] = "up"
    entry.update(model)
    gpus = [{"index": 0, "memory_free": free_mb}] if free_mb else []
    return Capabilities(
        worker=name, queues=["ai.upscale"], capacity=1, ai_models=[entry], gpus=gpus
    )


def test_warm_before_cold() -> None:
    live = [_worker("a-cold"), _worker("b-warm", warm=True), _worker("c-cold")]
    route = route_ai("upscale", MODEL, live)
    assert route.workers == ("b-warm", "a-cold", "c-cold")
    assert route.queue == "ai.upscale@b-warm" and route.warm


def test_least_loaded_warm_then_cold_with_most_free_gpu_memory() -> None:
    live = [
        _worker("busy", warm=True, capacity=4, load=3),
        _worker("idle", warm=True, capacity=4, load=1),
        _worker("small", free_mb=8_000),
        _worker("big", free_mb=70_000),
    ]
    assert route_ai("upscale", MODEL, live).workers == ("idle", "busy", "big", "small")


def test_down_and_full_workers_are_skipped() -> None:
    live = [
        _worker("down", warm=True, status="down"),
        _worker("full", warm=True, load=1),
        _worker("ok"),
    ]
    route = route_ai("upscale", MODEL, live)
    assert route.workers == ("ok",) and not route.warm


def test_excluded_workers_are_skipped() -> None:
    live = [_worker("a", warm=True), _worker("b")]
    assert route_ai("upscale", MODEL, live, exclude=["a"]).workers == ("b",)
    with pytest.raises(NoCapacity, match="2 worker\\(s\\) serve it, 2 already tried"):
        route_ai("upscale", MODEL, live, exclude=["a", "b"])


def test_no_worker_serves_the_model() -> None:
    with pytest.raises(NoCapacity, match="no live worker serves upscale other/model"):
        route_ai("upscale", "other/model", [_worker("a")])
    with pytest.raises(NoCapacity, match="no live worker serves llm"):
        route_ai("llm", MODEL, [])
    with pytest.raises(NoCapacity, match="down or full"):
        route_ai("upscale", MODEL, [_worker("a", status="down")])
