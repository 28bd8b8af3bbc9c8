"""``farm ai-runner``: serve a built-in AI pipeline behind ai-runner's HTTP API."""

from __future__ import annotations

import click

from farm.cli.cluster import _load
from farm.cli.listen import ensure_free
from farm.settings import AIRunnerSettings

__all__ = ["ai_runner_cmd"]


@click.command("ai-runner")
@click.option("--pipeline", default=None, help="upscale or llm (default upscale).")
@click.option(
    "--model-id",
    default=None,
    help="Model id served (default: Livepeer's default for upscale, farm/echo for llm).",
)
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8000).")
@click.option("--token", default=None, help="Bearer token callers must send (default none).")
def ai_runner_cmd(
    pipeline: str | None,
    model_id: str | None,
    host: str | None,
    port: int | None,
    token: str | None,
) -> None:
    """Serve a built-in pipeline (upscale, or the development llm farm/echo) as an ai-runner."""
    import uvicorn

    from farm.ai.builtin import ECHO_MODEL
    from farm.ai.config import DEFAULT_MODELS
    from farm.ai.server import create_runner_app

    settings: AIRunnerSettings = _load(
        AIRunnerSettings,
        ai_runner_pipeline=pipeline,
        ai_runner_model_id=model_id,
        ai_runner_host=host,
        ai_runner_port=port,
        ai_runner_token=token,
    )
    name = settings.ai_runner_pipeline
    default = ECHO_MODEL if name == "llm" else DEFAULT_MODELS.get(name, "")
    secret = settings.ai_runner_token.get_secret_value() if settings.ai_runner_token else None
    app = create_runner_app(name, settings.ai_runner_model_id or default, secret)
    ensure_free(settings.ai_runner_host, settings.ai_runner_port, "farm ai-runner")
    uvicorn.run(
        app, host=settings.ai_runner_host, port=settings.ai_runner_port, log_level="warning"
    )
