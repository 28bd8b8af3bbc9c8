"""AI jobs: per-model configuration, runners, routing by pipeline and model, and results."""

from farm.ai.config import AIModelConfig, load_ai_models
from farm.ai.results import AIMedia, AIResult

__all__ = ["AIMedia", "AIModelConfig", "AIResult", "load_ai_models"]
