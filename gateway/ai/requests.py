"""Reading an AI request: JSON or multipart body, validation, defaults, the measured upload.

Everything the caller got wrong is found here, before any credit is held: a body that is not
JSON or not multipart (400), a missing or mistyped field (400), an upload over its cap (413),
a file PyAV cannot read (400).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from gateway.ai.media import MediaInfo, audio_seconds, image_size
from gateway.ai.pipelines import Pipeline, json_value
from gateway.api.body import JSON_LIMIT, read_body, stream_body
from gateway.errors import BadRequest, UploadTooLarge

__all__ = [
    "JSON_LIMIT",
    "AIRequest",
    "read_ai_request",
    "read_json_object",
    "validate_params",
]

#: Room for the text fields beside a capped upload in one multipart body.
_FORM_SLACK = 1024 * 1024
#: 512 x 512 when a text-to-image request sets no size (go-livepeer's gateway default).
_T2I_SIDE = 512


@dataclass(frozen=True, slots=True)
class AIRequest:
    """A validated request: its pipeline, model, runner fields (defaults applied) and file."""

    pipeline: Pipeline
    model_id: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    media: MediaInfo = field(default_factory=MediaInfo)


async def read_ai_request(request: Request, pipeline: Pipeline, upload_limit: int) -> AIRequest:
    """Parse and validate the body of ``request`` for ``pipeline``."""
    # Measuring the upload decodes it: off the event loop, like every blocking step.
    if pipeline.body == "json":
        data = await _json_body(request, pipeline)
        return await run_in_threadpool(validate_params, pipeline, data, strict=True)
    fields, files = await _form(request, pipeline, upload_limit)
    return await run_in_threadpool(validate_params, pipeline, fields, strict=False, files=files)


def validate_params(
    pipeline: Pipeline,
    data: dict[str, Any],
    *,
    strict: bool,
    files: dict[str, bytes] | None = None,
) -> AIRequest:
    """Check ``data`` against the pipeline's fields; apply defaults; measure the upload.

    JSON is checked strictly (a number is not a string, as Go's decoder says); form fields
    are text, so they are converted ("true", "512").
    """
    try:
        parsed = pipeline.params.model_validate(data, strict=strict)
    except ValidationError as e:
        raise BadRequest(_problems(e)) from e
    params = parsed.model_dump(mode="json", exclude_none=True)
    model_id = str(params.get(pipeline.model_field) or pipeline.default_model)
    params[pipeline.model_field] = model_id
    if pipeline.name == "text-to-image":
        params.setdefault("height", _T2I_SIDE)
        params.setdefault("width", _T2I_SIDE)
    if "num_images_per_prompt" in params:
        params["num_images_per_prompt"] = max(1, params["num_images_per_prompt"])
    files = files or {}
    media = MediaInfo()
    if pipeline.file is not None:
        data_ = files[pipeline.file]
        media = audio_seconds(data_) if pipeline.file == "audio" else image_size(data_)
    return AIRequest(pipeline, model_id, params, files, media)


def _problems(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
    )


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, at most :data:`JSON_LIMIT` bytes (400, 413 otherwise)."""
    try:
        data: dict[str, Any] = json_value(await read_body(request, JSON_LIMIT), dict)
    except ValueError as e:
        raise BadRequest(f"the body {e}") from e
    return data


async def _json_body(request: Request, pipeline: Pipeline) -> dict[str, Any]:
    data = await read_json_object(request)
    if pipeline.name == "llm" and any(
        data.get(name) is None for name in ("model", "messages", "stream", "max_tokens")
    ):
        # go-livepeer's gateway answers exactly this when any of the four is absent.
        raise BadRequest("missing required fields")
    return data


async def _form(
    request: Request, pipeline: Pipeline, upload_limit: int
) -> tuple[dict[str, str], dict[str, bytes]]:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest("request Content-Type isn't multipart/form-data")
    limit, too_large = upload_limit, None
    if pipeline.file_limit is not None:
        limit = min(limit, pipeline.file_limit + _FORM_SLACK)
        too_large = str(_too_large(pipeline.file or "upload", pipeline.file_limit))
    parser = MultiPartParser(request.headers, stream_body(request, limit, too_large))
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise BadRequest(f"malformed multipart body: {e.message}") from e
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != pipeline.file:
                    raise BadRequest(f"{name}: must be a text field, not a file")
                files[name] = await value.read()
            elif name == pipeline.file:
                raise BadRequest(f"{name}: must be a file upload")
            else:
                fields[name] = value
    finally:
        await form.close()
    if pipeline.file is not None:
        upload = files.get(pipeline.file)
        if upload is None:
            raise BadRequest(f"{pipeline.file}: Field required")
        if not upload:
            raise BadRequest(f"{pipeline.file}: the file is empty")
        if pipeline.file_limit is not None and len(upload) > pipeline.file_limit:
            raise _too_large(pipeline.file, pipeline.file_limit)
    return fields, files


def _too_large(name: str, limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"{name} file too large; max file size is {limit // 2**20}MB")
