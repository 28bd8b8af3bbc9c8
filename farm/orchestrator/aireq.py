"""An AI request as go-livepeer's orchestrator takes it: the body, the model and the units.

The body is JSON (text-to-image, llm, text-to-speech) or a multipart form with one file (the
others). Units are go-livepeer's (``server/ai_http.go``), what a request is debited for:

===========================================  ===============================================
pipeline                                     units
===========================================  ===============================================
text-to-image                                height x width x images (512 x 512 if unset)
image-to-image                               input width x height x images
image-to-video                               height x width x 25 (576 x 1024 if unset)
upscale, segment-anything-2, image-to-text   input width x height
audio-to-text                                milliseconds of audio, rounded up
llm                                          max_tokens (required)
text-to-speech                               1000 x characters of ``text``
===========================================  ===============================================

Everything else in the body goes to the runner as it came; the runner checks it (ai-runner's
400 and 422 come back as 400).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import av
import av.error
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from farm.orchestrator.service import SegmentRefused

__all__ = ["AI_PIPELINES", "AIPipeline", "ParsedAIRequest", "parse_form", "parse_json", "units"]

#: go-livepeer prices image-to-video as the 25 frames of stable-video-diffusion-img2vid-xt.
VIDEO_FRAMES: Final = 25
_MAX_SIDE: Final = 8192
_MAX_IMAGES: Final = 64


@dataclass(frozen=True, slots=True)
class AIPipeline:
    """One AI route: its capability id, how its body comes, its file and its model field."""

    name: str
    capability: int
    body: Literal["json", "multipart"]
    file: str | None = None
    model_field: str = "model_id"


AI_PIPELINES: Final = {
    p.name: p
    for p in (
        AIPipeline("text-to-image", 27, "json"),
        AIPipeline("image-to-image", 28, "multipart", "image"),
        AIPipeline("image-to-video", 29, "multipart", "image"),
        AIPipeline("upscale", 30, "multipart", "image"),
        AIPipeline("audio-to-text", 31, "multipart", "audio"),
        AIPipeline("segment-anything-2", 32, "multipart", "image"),
        AIPipeline("llm", 33, "json", model_field="model"),
        AIPipeline("image-to-text", 34, "multipart", "image"),
        AIPipeline("text-to-speech", 36, "json"),
    )
}


@dataclass(frozen=True, slots=True)
class ParsedAIRequest:
    """A request's pipeline, model, the fields for the runner and the uploaded file."""

    pipeline: AIPipeline
    model_id: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest(self) -> str:
        """go-livepeer's balance key for the request: ``<capability>_<model>``."""
        return f"{self.pipeline.capability}_{self.model_id}"


def _bad(message: str) -> SegmentRefused:
    return SegmentRefused(400, message)


def parse_json(pipeline: AIPipeline, body: bytes) -> ParsedAIRequest:
    """A JSON request body; SegmentRefused (400) when it is not a JSON object."""
    try:
        params = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise _bad(f"invalid JSON body: {e}") from None
    if not isinstance(params, dict):
        raise _bad("the body must be a JSON object")
    return ParsedAIRequest(pipeline, str(params.get(pipeline.model_field) or ""), params)


async def parse_form(pipeline: AIPipeline, headers: Headers, body: bytes) -> ParsedAIRequest:
    """A multipart request body with the pipeline's file; SegmentRefused (400) otherwise."""
    if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise _bad("request Content-Type isn't multipart/form-data")

    async def chunks() -> Any:
        yield body

    try:
        form = await MultiPartParser(headers, chunks()).parse()
    except MultiPartException as e:
        raise _bad(f"malformed multipart body: {e.message}") from None
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != pipeline.file:
                    raise _bad(f"{name}: must be a text field, not a file")
                files[name] = await value.read()
            else:
                params[name] = value
    finally:
        await form.close()
    assert pipeline.file is not None
    if not files.get(pipeline.file):
        raise _bad(f"{pipeline.file}: a non-empty file is required")
    return ParsedAIRequest(pipeline, str(params.get(pipeline.model_field) or ""), params, files)


def _int(params: dict[str, Any], name: str, default: int, most: int) -> int:
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, str):  # form fields are text
        try:
            value = int(value.strip())
        except ValueError:
            raise _bad(f"{name} must be an integer") from None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise _bad(f"{name} must be an integer from 1 to {most}")
    return value


def _image_size(data: bytes) -> tuple[int, int]:
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if container.streams.video:
                ctx = container.streams.video[0].codec_context
                if ctx.width > 0 and ctx.height > 0:
                    return ctx.width, ctx.height
                for frame in container.decode(video=0):
                    return frame.width, frame.height
    except (av.error.FFmpegError, ValueError) as e:
        raise _bad(f"image: unknown format: {e}") from None
    raise _bad("image: unknown format")


def _audio_ms(data: bytes) -> int:
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise _bad("Unable to calculate duration")
            stream = container.streams.audio[0]
            if container.duration:
                seconds = container.duration / av.time_base
            elif stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            else:
                samples = sum(int(f.samples) for f in container.decode(audio=0))
                seconds = samples / (stream.sample_rate or 1)
    except (av.error.FFmpegError, ValueError):
        raise _bad("Unable to calculate duration") from None
    if seconds <= 0:
        raise _bad("Unable to calculate duration")
    return math.ceil(seconds * 1000)


def units(req: ParsedAIRequest) -> int:
    """The request's units (the table in this module's docstring); SegmentRefused (400) when
    they cannot be worked out (an unreadable upload, a missing max_tokens or text)."""
    params = req.params
    match req.pipeline.name:
        case "text-to-image":
            side = _MAX_SIDE
            return (
                _int(params, "height", 512, side)
                * _int(params, "width", 512, side)
                * _int(params, "num_images_per_prompt", 1, _MAX_IMAGES)
            )
        case "image-to-image":
            w, h = _image_size(req.files["image"])
            return w * h * _int(params, "num_images_per_prompt", 1, _MAX_IMAGES)
        case "image-to-video":
            return (
                _int(params, "height", 576, _MAX_SIDE)
                * _int(params, "width", 1024, _MAX_SIDE)
                * VIDEO_FRAMES
            )
        case "upscale" | "segment-anything-2" | "image-to-text":
            w, h = _image_size(req.files["image"])
            return w * h
        case "audio-to-text":
            return _audio_ms(req.files["audio"])
        case "llm":
            if params.get("max_tokens") is None:
                raise _bad("MaxTokens not specified")
            return _int(params, "max_tokens", 0, 2**31 - 1)
        case "text-to-speech":
            text = params.get("text")
            if not isinstance(text, str) or not text:
                raise _bad("text is required")
            return 1000 * len(text)
    raise _bad("Unknown request type")
