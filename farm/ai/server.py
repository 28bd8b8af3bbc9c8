"""``farm ai-runner``: a built-in pipeline behind ai-runner's HTTP API.

The same routes, bodies and error shapes as Livepeer's ai-runner container: ``GET /health``,
``/version``, ``/hardware/info``, ``/hardware/stats``; ``POST /<pipeline>`` (and with a
trailing slash); an optional bearer token (401); a model id other than the served one (400);
bad input (400 ``{"detail": {"msg": ...}}``) and validation errors (422). So the farm's HTTP
runner client is tested against a real server, and a farm can serve a pipeline over HTTP.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from farm import __version__
from farm.ai.builtin import builtin_pipeline, collect_llm
from farm.errors import AIRequestInvalid, ConfigError

__all__ = ["create_runner_app", "runner_error"]

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def runner_error(status: int, msg: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """ai-runner's error body: ``{"detail": {"msg": ...}}``."""
    return JSONResponse(status_code=status, content={"detail": {"msg": msg}}, headers=headers)


class RunnerLLMMessage(BaseModel):
    role: str
    content: str


class RunnerLLMRequest(BaseModel):
    """ai-runner's LLM request with its defaults."""

    model_config = ConfigDict(allow_inf_nan=False)
    messages: list[RunnerLLMMessage]
    model: str = ""
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(256, ge=1)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = -1
    stream: bool = False


def create_runner_app(pipeline: str, model_id: str, token: str | None = None) -> FastAPI:
    """An ai-runner-compatible app serving the built-in ``pipeline`` as ``model_id``."""
    run = builtin_pipeline(pipeline, model_id)
    app = FastAPI(title="farm ai-runner", version=__version__)
    label = pipeline.replace("-", " ").capitalize()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        # ai-runner's 422 list, without the values: a NaN or an infinity is not JSON.
        detail = [{"loc": list(d["loc"]), "msg": d["msg"], "type": d["type"]} for d in e.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})

    def refused(creds: HTTPAuthorizationCredentials | None) -> JSONResponse | None:
        # As bytes: compare_digest refuses str with non-ASCII characters (a garbage header).
        if token and not (
            creds and secrets.compare_digest(creds.credentials.encode(), token.encode())
        ):
            return runner_error(401, "Invalid bearer token.", {"WWW-Authenticate": "Bearer"})
        return None

    def wrong_model(requested: str) -> JSONResponse | None:
        if requested and requested != model_id:
            return runner_error(
                400, f"pipeline configured with {model_id} but called with {requested}."
            )
        return None

    def call(params: dict[str, Any], files: dict[str, bytes]) -> Any:
        try:
            return run(params, files)
        except AIRequestInvalid as e:
            return runner_error(400, str(e))
        except Exception:
            log.exception("%s pipeline error", pipeline)
            return runner_error(500, f"{label} pipeline error.")

    @app.get("/health")
    def health() -> dict[str, str]:
        """Runner state: LOADING, OK, ERROR or IDLE."""
        return {"status": "OK"}

    @app.get("/version")
    def version() -> dict[str, str]:
        """Pipeline, model and runner version."""
        return {"pipeline": pipeline, "model_id": model_id, "version": __version__}

    @app.get("/hardware/info")
    def hardware_info() -> dict[str, Any]:
        """GPUs the pipeline runs on (none: the built-in runners use the CPU)."""
        return {"pipeline": pipeline, "model_id": model_id, "gpu_info": {}}

    @app.get("/hardware/stats")
    def hardware_stats() -> dict[str, Any]:
        """GPU utilization of the pipeline (none: the built-in runners use the CPU)."""
        return {"pipeline": pipeline, "model_id": model_id, "gpu_stats": {}}

    if pipeline == "upscale":

        @app.post("/upscale")
        @app.post("/upscale/", include_in_schema=False)
        def upscale_route(
            prompt: Annotated[str, Form()],
            image: Annotated[UploadFile, File()],
            creds: Credentials,
            model_id_: Annotated[str, Form(alias="model_id")] = "",
            safety_check: Annotated[bool, Form()] = True,
            seed: Annotated[int | None, Form()] = None,
            num_inference_steps: Annotated[int, Form()] = 75,
        ) -> Any:
            """Upscale an image by increasing its resolution."""
            error = refused(creds) or wrong_model(model_id_)
            if error is not None:
                return error
            params = {"prompt": prompt, "seed": seed, "safety_check": safety_check}
            params["num_inference_steps"] = num_inference_steps
            return call(params, {"image": image.file.read()})

    elif pipeline == "llm":

        @app.post("/llm")
        @app.post("/llm/", include_in_schema=False)
        def llm_route(request: RunnerLLMRequest, creds: Credentials) -> Any:
            """Generate text using a language model."""
            error = refused(creds) or wrong_model(request.model)
            if error is not None:
                return error
            chunks = call(request.model_dump(), {})
            if isinstance(chunks, JSONResponse):
                return chunks
            if not request.stream:
                return collect_llm(chunks)
            return StreamingResponse(_sse(chunks), media_type="text/event-stream")

    else:  # builtin_pipeline() refuses every other pipeline first
        raise ConfigError(f"no ai-runner route for {pipeline}")
    return app


def _sse(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    """ai-runner's event stream: ``data: {chunk}`` per chunk, ``data: [DONE]`` at the end."""
    try:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"
    except Exception as e:
        log.exception("llm stream failed")
        yield f"data: {json.dumps({'error': str(e)})}\n\n"
