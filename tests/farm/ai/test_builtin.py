"""Built-in pipelines: real x4 upscaling with PyAV, and the development LLM farm/echo."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from farm.ai.builtin import builtin_pipeline, collect_llm, echo_llm, upscale
from farm.errors import AIRequestInvalid, ConfigError
from tests.farm.ai.helpers import decode, picture, png, psnr, resize


def _upscaled(array: np.ndarray) -> np.ndarray:
    response = upscale({"prompt": "a picture", "seed": 7}, {"image": png(array)})
    (image,) = response["images"]
    assert image["seed"] == 7 and image["nsfw"] is False
    header, _, body = image["url"].partition(",")
    assert header == "data:image/png;base64"
    return decode(base64.b64decode(body))


def test_upscale_is_four_times_larger_and_resembles_the_input() -> None:
    source = picture(64, 48)
    out = _upscaled(source)
    assert out.shape == (192, 256, 3)
    # Close to an independent bicubic resize of the same picture ...
    reference = resize(source, 256, 192, "bicubic")
    assert psnr(out, reference) > 30
    # ... and shrinking it back gives the input again.
    assert psnr(resize(out, 64, 48, "area"), source) > 30
    # A different picture is far from it: the check above can fail.
    assert psnr(out, resize(picture(64, 48, shift=20), 256, 192, "bicubic")) < 25


def test_upscale_sharpens_beyond_plain_bilinear() -> None:
    source = picture(64, 48)
    out = _upscaled(source).astype(np.float64)
    soft = resize(source, 256, 192, "bilinear").astype(np.float64)
    # The unsharp filter raises edge contrast: more gradient energy than bilinear.
    assert np.abs(np.diff(out, axis=1)).sum() > np.abs(np.diff(soft, axis=1)).sum()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "image is required"),
        ({"image": b""}, "empty"),
        ({"image": b"not an image at all" * 10}, "could not be decoded"),
    ],
)
def test_upscale_bad_input(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(AIRequestInvalid, match=message):
        upscale({"prompt": "x"}, files)


def test_upscale_refuses_oversized_input() -> None:
    with pytest.raises(AIRequestInvalid, match="at most"):
        upscale({"prompt": "x"}, {"image": png(picture(1100, 1000))})


def test_echo_llm_streams_words_then_finishes() -> None:
    params = {"messages": [{"role": "user", "content": "one two three"}], "max_tokens": 256}
    chunks = list(echo_llm(params, {}))
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["one", " two", " three", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == ["", "", "", "stop"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    whole = collect_llm(iter(chunks))
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "one two three"}
    cut = collect_llm(echo_llm({**params, "max_tokens": 2}, {}))
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["choices"][0]["message"]["content"] == "one two"


@pytest.mark.parametrize(
    "params",
    [{}, {"messages": []}, {"messages": [{"role": "user"}]}, {"messages": "hi"}],
)
def test_echo_llm_bad_messages(params: dict[str, object]) -> None:
    with pytest.raises(AIRequestInvalid):
        echo_llm(params, {})


def test_no_builtin_for_real_models() -> None:
    with pytest.raises(ConfigError, match="no built-in runner"):
        builtin_pipeline("llm", "meta-llama/llama-3.1-8B-Instruct")
    with pytest.raises(ConfigError):
        builtin_pipeline("text-to-image", "stabilityai/sdxl-turbo")
