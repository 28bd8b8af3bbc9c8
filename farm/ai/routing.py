"""Routing an AI job: workers with the model warm first, then cold, never a down or full one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from farm.errors import NoCapacity
from farm.queues import ai_worker_queue
from farm.registry import Capabilities

__all__ = ["AIRoute", "ai_candidates", "route_ai"]


@dataclass(frozen=True, slots=True)
class AIRoute:
    """The chosen worker's own queue, and every candidate in order of preference."""

    pipeline: str
    model_id: str
    queue: str
    workers: tuple[str, ...]
    warm: bool


def _free_gpu_memory(w: Capabilities) -> int:
    return sum(int(g.get("memory_free", 0) or 0) for g in w.gpus)


def ai_candidates(
    pipeline: str, model_id: str, live: Sequence[Capabilities], exclude: Iterable[str] = ()
) -> list[tuple[Capabilities, dict[str, Any]]]:
    """Live workers that serve the model and have a free slot on an up runner, best first.

    Warm before cold (go-livepeer's AI selection); among warm ones the least loaded first;
    among cold ones the most free GPU memory first, since a cold model still has to load.
    """
    skip = set(exclude)
    found = []
    for w in live:
        if w.worker in skip:
            continue
        for m in w.ai_models:
            if m.get("pipeline") != pipeline or m.get("model_id") != model_id:
                continue
            if m.get("status") == "down" or m.get("load", 0) >= m.get("capacity", 1):
                continue
            found.append((w, m))

    def order(item: tuple[Capabilities, dict[str, Any]]) -> tuple[int, float, int, str]:
        w, m = item
        load = m.get("load", 0) / max(1, m.get("capacity", 1))
        return (0 if m.get("warm") else 1, load, -_free_gpu_memory(w), w.worker)

    return sorted(found, key=order)


def route_ai(
    pipeline: str, model_id: str, live: Sequence[Capabilities], exclude: Iterable[str] = ()
) -> AIRoute:
    """The best worker for (pipeline, model); NoCapacity when none can take the job."""
    excluded = set(exclude)
    found = ai_candidates(pipeline, model_id, live, excluded)
    if found:
        first, entry = found[0]
        return AIRoute(
            pipeline,
            model_id,
            ai_worker_queue(pipeline, first.worker),
            tuple(w.worker for w, _ in found),
            bool(entry.get("warm")),
        )
    serving = [
        w
        for w in live
        if any(m.get("pipeline") == pipeline and m.get("model_id") == model_id for m in w.ai_models)
    ]
    if not serving:
        raise NoCapacity(f"insufficient capacity: no live worker serves {pipeline} {model_id}")
    tried = sum(1 for w in serving if w.worker in excluded)
    raise NoCapacity(
        f"insufficient capacity for {pipeline} {model_id}: {len(serving)} worker(s) serve it, "
        f"{tried} already tried, the others are down or full"
    )
