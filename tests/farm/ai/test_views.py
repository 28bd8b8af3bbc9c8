"""AI models in the terminal view of the cluster (from one /status answer, no services)."""

from __future__ import annotations

from farm.status import Snapshot, render

WORKER = {
    "name": "ai@host:7",
    "queues": ["ai.upscale", "ai.upscale@ai@host:7"],
    "capacity": 2,
    "load": 1,
    "gpus": [],
    "ai_models": [
        {
            "pipeline": "upscale",
            "model_id": "stabilityai/stable-diffusion-x4-upscaler",
            "warm": True,
            "status": "up",
            "load": 1,
            "capacity": 2,
            "runner": "http",
        },
        {"pipeline": "llm", "model_id": "farm/echo", "status": "down", "capacity": 1},
    ],
}


def test_terminal_view_lists_ai_models() -> None:
    node = {"workers": [WORKER], "queues": {}, "jobs": {}}
    text = render(Snapshot(node_url="http://n:8935", node=node, taken_at=1.0))
    assert "AI MODELS" in text
    rows = [line.split() for line in text.split("AI MODELS", 1)[1].splitlines()]
    assert [r for r in rows if r and r[0] == "ai@host:7"] == [
        [
            "ai@host:7",
            "upscale",
            "stabilityai/stable-diffusion-x4-upscaler",
            "warm",
            "up",
            "1/2",
            "http",
        ],
        ["ai@host:7", "llm", "farm/echo", "cold", "down", "0/1"],
    ]
    no_ai = render(Snapshot(node_url="http://n:8935", node={**node, "workers": []}, taken_at=1.0))
    assert "AI MODELS" not in no_ai
