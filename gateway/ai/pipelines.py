"""Livepeer's AI pipelines as the gateway takes them: fields, defaults, files and models.

Field names, types and defaults follow ai-runner's gateway OpenAPI file. ``model_id``
(``model`` for llm) may be left empty: the gateway then uses the pipeline's default model,
go-livepeer's (``farm.protocol.DEFAULT_MODELS``), as go-livepeer does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.protocol import DEFAULT_MODELS

__all__ = [
    "AUDIO_LIMIT",
    "PIPELINES",
    "AudioToText",
    "ImageToImage",
    "ImageToText",
    "ImageToVideo",
    "LLMMessage",
    "LLMRequest",
    "Pipeline",
    "SegmentAnything2",
    "TextToImage",
    "TextToSpeech",
    "Upscale",
    "json_value",
]

#: ai-runner refuses larger audio (and image-to-text) uploads with 413.
AUDIO_LIMIT = 50 * 1024 * 1024
#: Output size cap for generated pictures and videos; keeps a price from overflowing.
_MAX_SIDE = 8192


def json_value(text: str | bytes, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
    """``text`` parsed as a JSON object or array (``kind``); ValueError saying why not.

    Strict JSON, as Go's decoder reads it: no ``NaN`` or ``Infinity``, and nesting the
    parser can follow."""
    what = "a JSON object" if kind is dict else "a JSON array"
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError as e:
        raise ValueError(f"must be {what}: {e}") from None
    except RecursionError:
        raise ValueError(f"must be {what}: nested too deeply") from None
    if not isinstance(value, kind):
        raise ValueError(f"must be {what}")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


#: A model id: what ai-runner names models by, without control characters.
_MODEL_ID = r"^[^\x00-\x1f\x7f]{0,256}$"


class _Body(BaseModel):
    """A request body: unknown fields are ignored, as upstream; numbers must be finite (a
    form's ``"nan"`` or ``"inf"`` is refused, not passed on); an integer may be written as a
    whole float (JSON has one number type: 100.0 is the integer 100 to JSON Schema and to
    Go's decoder), a fraction may not."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        integers = {n for n, f in cls.model_fields.items() if f.annotation in (int, int | None)}
        return {
            k: int(v) if k in integers and isinstance(v, float) and v.is_integer() else v
            for k, v in data.items()
        }


class _Params(_Body):
    """Fields every pipeline's request shares."""

    model_id: str = Field("", pattern=_MODEL_ID)


class _Diffusion(_Params):
    """Fields text-to-image and image-to-image share."""

    prompt: str
    loras: str = ""
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    safety_check: bool = True
    seed: int | None = None
    num_images_per_prompt: int = Field(1, le=64)


class TextToImage(_Diffusion):
    """``POST /text-to-image`` (JSON). Height and width left out become 512 at the gateway."""

    height: int | None = Field(None, ge=1, le=_MAX_SIDE)
    width: int | None = Field(None, ge=1, le=_MAX_SIDE)
    num_inference_steps: int = Field(50, ge=1)


class ImageToImage(_Diffusion):
    """``POST /image-to-image`` (multipart, with ``image``)."""

    strength: float = 0.8
    image_guidance_scale: float = 1.5
    num_inference_steps: int = Field(100, ge=1)


class ImageToVideo(_Params):
    """``POST /image-to-video`` (multipart, with ``image``)."""

    height: int = Field(576, ge=1, le=_MAX_SIDE)
    width: int = Field(1024, ge=1, le=_MAX_SIDE)
    fps: int = Field(6, ge=1)
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    safety_check: bool = True
    seed: int | None = None
    num_inference_steps: int = Field(25, ge=1)


class Upscale(_Params):
    """``POST /upscale`` (multipart, with ``image``)."""

    prompt: str
    safety_check: bool = True
    seed: int | None = None
    num_inference_steps: int = Field(75, ge=1)


class AudioToText(_Params):
    """``POST /audio-to-text`` (multipart, with ``audio`` of at most 50 MB)."""

    return_timestamps: str = "true"
    metadata: str = "{}"

    @field_validator("metadata")
    @classmethod
    def _json_object(cls, v: str) -> str:
        json_value(v, dict)
        return v


class SegmentAnything2(_Params):
    """``POST /segment-anything-2`` (multipart, with ``image``); prompts are JSON strings."""

    point_coords: str | None = None
    point_labels: str | None = None
    box: str | None = None
    mask_input: str | None = None
    multimask_output: bool = True
    return_logits: bool = True
    normalize_coords: bool = True

    @field_validator("point_coords", "point_labels", "box", "mask_input")
    @classmethod
    def _json_array(cls, v: str | None) -> str | None:
        if v is not None:
            json_value(v, list)
        return v


class ImageToText(_Params):
    """``POST /image-to-text`` (multipart, with ``image`` of at most 50 MB)."""

    prompt: str = ""


class LLMMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class LLMRequest(_Body):
    """``POST /llm`` (JSON). The gateway requires model, messages, stream and max_tokens."""

    messages: list[LLMMessage] = Field(min_length=1)
    model: str = Field(pattern=_MODEL_ID)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(ge=1)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = -1
    stream: bool


class TextToSpeech(_Params):
    """``POST /text-to-speech`` (JSON); the gateway requires ``text``."""

    text: str = Field(min_length=1)
    description: str = (
        "A male speaker delivers a slightly expressive and animated speech with a moderate "
        "speed and pitch."
    )


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One AI route: how its body comes, its fields, its file and its default model."""

    name: str
    body: Literal["json", "multipart"]
    params: type[BaseModel]
    #: The uploaded file field (multipart pipelines), and whether it is audio or an image.
    file: str | None = None
    #: Upload cap of the file in bytes (None: the gateway's general upload cap).
    file_limit: int | None = None
    #: The field naming the model (llm says ``model``).
    model_field: str = "model_id"

    @property
    def default_model(self) -> str:
        """go-livepeer's model for requests that name none."""
        return DEFAULT_MODELS[self.name]

    def openapi_body(self) -> dict[str, Any]:
        """The route's OpenAPI ``requestBody`` (the routes read their bodies themselves)."""
        schema = self.params.model_json_schema()
        defs = schema.pop("$defs", {})

        def inline(node: Any) -> Any:
            if isinstance(node, dict):
                ref = node.get("$ref", "")
                if ref.startswith("#/$defs/"):
                    return inline(defs[ref.removeprefix("#/$defs/")])
                return {k: inline(v) for k, v in node.items()}
            return [inline(v) for v in node] if isinstance(node, list) else node

        schema = inline(schema)
        if self.file is not None:
            schema["properties"][self.file] = {"type": "string", "format": "binary"}
            schema["required"] = [*schema.get("required", []), self.file]
        if self.body == "multipart":
            # A form field is text or absent: it cannot be null.
            for name, prop in schema["properties"].items():
                alternatives = [a for a in prop.get("anyOf", []) if a.get("type") != "null"]
                if len(alternatives) == 1 and len(prop["anyOf"]) == 2:
                    rest = {k: v for k, v in prop.items() if k != "anyOf"}
                    schema["properties"][name] = {**alternatives[0], **rest}
        media = "application/json" if self.body == "json" else "multipart/form-data"
        return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}


PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        Pipeline("text-to-image", "json", TextToImage),
        Pipeline("image-to-image", "multipart", ImageToImage, "image"),
        Pipeline("image-to-video", "multipart", ImageToVideo, "image"),
        Pipeline("upscale", "multipart", Upscale, "image"),
        Pipeline("audio-to-text", "multipart", AudioToText, "audio", AUDIO_LIMIT),
        Pipeline("segment-anything-2", "multipart", SegmentAnything2, "image"),
        Pipeline("image-to-text", "multipart", ImageToText, "image", AUDIO_LIMIT),
        Pipeline("llm", "json", LLMRequest, model_field="model"),
        Pipeline("text-to-speech", "json", TextToSpeech),
    )
}
