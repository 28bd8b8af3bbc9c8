"""Per-model configuration in go-livepeer's ``-aiModels`` shape.

``[{"pipeline": "upscale", "model_id": "stabilityai/stable-diffusion-x4-upscaler",
"warm": true, "capacity": 1, "url": "http://gpu-box:8000", "token": "...",
"price_per_unit": 4768371, "pixels_per_unit": 1, "currency": "wei"}]``, given as a JSON string
or a path to a file holding it. The farm adds one optional field, ``runner``: ``http`` (an
ai-runner at ``url``), ``process`` (the worker starts ``farm ai-runner`` and restarts it when
its health probe fails) or ``builtin`` (run in the worker process, no weights needed); without
it, an entry with a ``url`` is ``http`` and one without is ``builtin``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from farm.errors import ConfigError

__all__ = [
    "DEFAULT_MODELS",
    "PIPELINES",
    "RUNNER_KINDS",
    "AIModelConfig",
    "load_ai_models",
    "parse_ai_models",
]

#: The pipelines Livepeer's AI gateway exposes (ai-runner's routes).
PIPELINES = (
    "text-to-image",
    "image-to-image",
    "image-to-video",
    "upscale",
    "audio-to-text",
    "segment-anything-2",
    "llm",
    "image-to-text",
    "text-to-speech",
)
RUNNER_KINDS = ("http", "process", "builtin")
#: go-livepeer's default model per pipeline (server/ai_process.go).
DEFAULT_MODELS = {
    "text-to-image": "stabilityai/sdxl-turbo",
    "image-to-image": "stabilityai/sdxl-turbo",
    "image-to-video": "stabilityai/stable-video-diffusion-img2vid-xt",
    "upscale": "stabilityai/stable-diffusion-x4-upscaler",
    "audio-to-text": "openai/whisper-large-v3",
    "llm": "meta-llama/llama-3.1-8B-Instruct",
    "segment-anything-2": "facebook/sam2-hiera-large",
    "image-to-text": "Salesforce/blip-image-captioning-large",
    "text-to-speech": "parler-tts/parler-tts-large-v1",
}
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "pipeline": str,
    "model_id": str,
    "warm": bool,
    "capacity": int,
    "url": str,
    "token": str,
    "price_per_unit": (int, float, str),
    "pixels_per_unit": (int, float, str),
    "currency": str,
    "optimization_flags": dict,
    "runner": str,
}


@dataclass(frozen=True, slots=True)
class AIModelConfig:
    """One ``-aiModels`` entry: which model of which pipeline, where it runs, what it costs."""

    pipeline: str
    model_id: str
    warm: bool = False
    capacity: int = 1
    url: str | None = None
    token: str | None = field(default=None, repr=False)
    price_per_unit: int | float | str = 0
    pixels_per_unit: int | float | str = 1
    currency: str = ""
    optimization_flags: dict[str, Any] = field(default_factory=dict)
    runner: str = "builtin"

    @property
    def key(self) -> tuple[str, str]:
        return (self.pipeline, self.model_id)

    def public(self) -> dict[str, Any]:
        """The entry without its token, for the registry and status pages."""
        data = asdict(self)
        data.pop("token")
        return data


def _entry(raw: object, index: int) -> AIModelConfig:
    where = f"aiModels[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for name, kind in _FIELDS.items():
        value = raw.get(name)
        # bool is an int in Python; a capacity of true is a mistake, not 1.
        bad_bool = kind is int and isinstance(value, bool)
        if value is not None and (bad_bool or not isinstance(value, kind)):
            raise ConfigError(f"{where}.{name} has the wrong type ({type(value).__name__})")
    for name in ("pipeline", "model_id"):
        if not raw.get(name):
            raise ConfigError(f"{where}: {name} is required")
    if raw["pipeline"] not in PIPELINES:
        raise ConfigError(
            f"{where}: unknown pipeline {raw['pipeline']!r} (one of {', '.join(PIPELINES)})"
        )
    capacity = raw.get("capacity", 1)
    if capacity < 1:
        raise ConfigError(f"{where}.capacity must be at least 1")
    url = raw.get("url") or None
    runner = raw.get("runner") or ("http" if url else "builtin")
    if runner not in RUNNER_KINDS:
        raise ConfigError(f"{where}.runner must be one of {', '.join(RUNNER_KINDS)}")
    if runner == "http" and not url:
        raise ConfigError(f"{where}: an http runner needs a url")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url must be an http(s) URL")
    if runner != "http" and url:
        raise ConfigError(f"{where}: a {runner} runner is started here and takes no url")
    for name in ("price_per_unit", "pixels_per_unit"):
        value = raw.get(name)
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{where}.{name} must not be negative")
    values = {k: v for k, v in raw.items() if v is not None}
    values.update(capacity=capacity, url=url, runner=runner)
    return AIModelConfig(**values)


def parse_ai_models(text: str) -> tuple[AIModelConfig, ...]:
    """Entries from ``-aiModels`` JSON text; ConfigError says what is wrong and where."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"aiModels is not valid JSON: {e}") from None
    if not isinstance(raw, list):
        raise ConfigError("aiModels must be a JSON list of model objects")
    models = tuple(_entry(item, i) for i, item in enumerate(raw))
    seen: set[tuple[str, str]] = set()
    for m in models:
        if m.key in seen:
            raise ConfigError(f"aiModels lists {m.pipeline} {m.model_id} twice")
        seen.add(m.key)
    return models


def load_ai_models(value: str | None) -> tuple[AIModelConfig, ...]:
    """Entries from a JSON string or the path of a file holding it (as go-livepeer takes it)."""
    if value is None or not value.strip():
        return ()
    text = value.strip()
    if text[0] not in "[{":
        path = Path(text).expanduser()
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"aiModels: cannot read {path}: {e.strerror or e}") from None
    return parse_ai_models(text)
