"""Built-in pipelines that need no downloaded weights, run in the worker process.

- ``upscale``: real x4 resampling, Lanczos through FFmpeg's scaler (PyAV) followed by an
  unsharp filter that restores edge contrast the interpolation softens. It answers ai-runner's
  ``ImageResponse`` with a PNG data URL, as ai-runner does. It serves the model id it is
  configured under; it is a resampler, not a diffusion upscaler.
- ``llm`` with model id ``farm/echo``: a deterministic development runner, not a language
  model. It answers the last user message back word by word, so ``/llm`` with ``stream: true``
  can be tested end to end through real servers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any, cast

import av
import av.error

from farm.errors import AIRequestInvalid, ConfigError

__all__ = [
    "ECHO_MODEL",
    "MAX_UPSCALE_INPUT_PIXELS",
    "UPSCALE_FACTOR",
    "BuiltinPipeline",
    "builtin_pipeline",
    "collect_llm",
    "decode_image",
    "echo_llm",
    "upscale",
]

UPSCALE_FACTOR = 4
#: Largest input the built-in upscaler takes (1024 x 1024 in, 4096 x 4096 out).
MAX_UPSCALE_INPUT_PIXELS = 1024 * 1024
ECHO_MODEL = "farm/echo"
_UNSHARP = "luma_msize_x=5:luma_msize_y=5:luma_amount=0.6"

#: (params, files) -> the runner's JSON response, or for llm an iterator of chunks.
BuiltinPipeline = Callable[[dict[str, Any], dict[str, bytes]], Any]


def decode_image(data: bytes) -> av.VideoFrame:
    """The first picture of an image file as an RGB frame; AIRequestInvalid when there is none."""
    if not data:
        raise AIRequestInvalid("image is empty (0 bytes)")
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.video:
                raise AIRequestInvalid("image has no picture in it")
            for frame in container.decode(video=0):
                return frame.reformat(format="rgb24")
    except av.error.FFmpegError as e:
        raise AIRequestInvalid(f"image could not be decoded: {e}") from None
    raise AIRequestInvalid("image could not be decoded: no picture found")


def _encode_png(frame: av.VideoFrame) -> bytes:
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
    packets = [*codec.encode(frame), *codec.encode(None)]
    return b"".join(bytes(p) for p in packets)


def _resample(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    graph = av.filter.Graph()
    chain = [
        graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=Fraction(1, 1)
        ),
        graph.add("scale", f"w={width}:h={height}:flags=lanczos+accurate_rnd+full_chroma_int"),
        graph.add("unsharp", _UNSHARP),
        graph.add("format", "rgb24"),
        graph.add("buffersink"),
    ]
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    graph.configure()
    frame.pts = 0
    graph.push(frame)
    return cast(av.VideoFrame, graph.pull())


def _seed(params: dict[str, Any]) -> int:
    seed = params.get("seed")
    if seed is None or seed == "":
        return random.randint(0, 2**32 - 1)
    try:
        return int(seed)
    except (TypeError, ValueError):
        raise AIRequestInvalid(f"seed must be an integer, not {seed!r}") from None


def upscale(params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """ai-runner's upscale: the image four times wider and higher, as a PNG data URL."""
    if "image" not in files:
        raise AIRequestInvalid("image is required")
    seed = _seed(params)
    frame = decode_image(files["image"])
    if frame.width * frame.height > MAX_UPSCALE_INPUT_PIXELS:
        raise AIRequestInvalid(
            f"image is {frame.width}x{frame.height}; the upscaler takes at most "
            f"{MAX_UPSCALE_INPUT_PIXELS} pixels"
        )
    out = _resample(frame, frame.width * UPSCALE_FACTOR, frame.height * UPSCALE_FACTOR)
    url = "data:image/png;base64," + base64.b64encode(_encode_png(out)).decode()
    return {"images": [{"url": url, "seed": seed, "nsfw": False}]}


def _messages(params: dict[str, Any]) -> list[dict[str, str]]:
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise AIRequestInvalid("messages must be a non-empty list of {role, content}")
    for m in messages:
        if not (
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
        ):
            raise AIRequestInvalid("each message needs a string role and content")
    return messages


def _chunk(
    ident: str, created: int, content: str, finish: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": ident,
        "model": ECHO_MODEL,
        "created": created,
        "usage": usage,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "delta": {"role": "assistant", "content": content},
            }
        ],
    }


def echo_llm(params: dict[str, Any], files: dict[str, bytes]) -> Iterator[dict[str, Any]]:
    """The development LLM: the last user message back, one word per chunk, then a final chunk
    with ``finish_reason`` ("stop", or "length" when ``max_tokens`` cut it short)."""
    messages = _messages(params)
    max_tokens = params.get("max_tokens", 256)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise AIRequestInvalid("max_tokens must be a positive integer")
    user = [m["content"] for m in messages if m["role"] == "user"]
    words = (user[-1] if user else messages[-1]["content"]).split()
    tokens = words[:max_tokens]
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:24]
    ident, created = f"chatcmpl-{digest}", int(time.time())
    prompt_tokens = sum(len(m["content"].split()) for m in messages)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens}

    def stream() -> Iterator[dict[str, Any]]:
        for i, word in enumerate(tokens):
            yield _chunk(ident, created, word if i == 0 else " " + word, "", usage)
        done = {**usage, "completion_tokens": len(tokens)}
        done["total_tokens"] = prompt_tokens + len(tokens)
        finish = "length" if len(words) > max_tokens else "stop"
        yield _chunk(ident, created, "", finish, done)

    return stream()


def collect_llm(chunks: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> dict[str, Any]:
    """A non-streaming LLMResponse from streamed chunks: one message with the whole text."""
    text, last = [], None
    for chunk in chunks:
        last = chunk
        for choice in chunk.get("choices", []):
            text.append((choice.get("delta") or {}).get("content") or "")
    if last is None:
        raise AIRequestInvalid("the model produced no response")
    finish = (last.get("choices") or [{}])[0].get("finish_reason") or "stop"
    return {
        "id": last.get("id", ""),
        "model": last.get("model", ""),
        "created": last.get("created", 0),
        "usage": last.get("usage", {}),
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": "".join(text)},
            }
        ],
    }


def builtin_pipeline(pipeline: str, model_id: str) -> BuiltinPipeline:
    """The built-in implementation for (pipeline, model); ConfigError when there is none."""
    if pipeline == "upscale":
        return upscale
    if pipeline == "llm" and model_id == ECHO_MODEL:
        return echo_llm
    raise ConfigError(
        f"no built-in runner for {pipeline} {model_id} (built in: upscale with any model id, "
        f"llm with {ECHO_MODEL}); give the model a url of an ai-runner"
    )
