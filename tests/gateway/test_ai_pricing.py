"""AI pricing: Livepeer's units per pipeline, and per-(pipeline, model) price lookup."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from farm.media.synth import make_segment
from gateway.ai.media import audio_seconds
from gateway.ai.pipelines import PIPELINES
from gateway.ai.pricing import CapabilityPrices, PriceTable, ai_units
from gateway.ai.requests import validate_params
from gateway.errors import BadRequest
from gateway.settings import GatewaySettings
from tests.factories import mp3_audio, still_image, wav_audio


def units(pipeline: str, fields: dict[str, Any], upload: bytes | None = None) -> int:
    p = PIPELINES[pipeline]
    files = {p.file: upload} if p.file and upload is not None else None
    req = validate_params(p, fields, strict=p.body == "json", files=files)
    return ai_units(pipeline, req.params, req.media)


def test_units_follow_livepeer_per_pipeline() -> None:
    image = still_image(120, 80)
    # text-to-image: h x w x n, 512 x 512 when the request sets no size.
    assert units("text-to-image", {"prompt": "a"}) == 512 * 512
    assert units("text-to-image", {"prompt": "a", "height": 64, "width": 32}) == 64 * 32
    assert units("text-to-image", {"prompt": "a", "num_images_per_prompt": 3}) == 512 * 512 * 3
    # image-to-image: the input's W x H x n; its default of one image.
    assert units("image-to-image", {"prompt": "a"}, image) == 120 * 80
    assert units("image-to-image", {"prompt": "a", "num_images_per_prompt": "2"}, image) == (
        120 * 80 * 2
    )
    # image-to-video: h x w x 25, whatever the fps; defaults 576 x 1024.
    assert units("image-to-video", {}, image) == 576 * 1024 * 25
    assert units("image-to-video", {"height": "64", "width": "96", "fps": "30"}, image) == (
        64 * 96 * 25
    )
    # upscale, segment-anything-2, image-to-text: the input's W x H.
    for pipeline in ("upscale", "segment-anything-2", "image-to-text"):
        assert units(pipeline, {"prompt": "x"}, image) == 120 * 80
    # audio-to-text: milliseconds, measured from the file.
    assert units("audio-to-text", {}, wav_audio(2.0)) == 2000
    assert units("audio-to-text", {}, wav_audio(1.25)) == 1250
    # llm: max_tokens.
    chat = {"model": "", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert units("llm", {**chat, "max_tokens": 300}) == 300
    # text-to-speech: 1000 x characters (the orchestrator's unit), not UTF-8 bytes.
    assert units("text-to-speech", {"text": "hello"}) == 5000
    assert units("text-to-speech", {"text": "héllo, 世界"}) == 9000


def test_n_images_below_one_counts_as_one_as_in_go_livepeer() -> None:
    assert units("text-to-image", {"prompt": "a", "num_images_per_prompt": 0}) == 512 * 512


def test_price_lookup_is_model_then_default_then_global() -> None:
    table = PriceTable(
        CapabilityPrices.model_validate(
            {
                "capabilities_prices": [
                    {"pipeline": "upscale", "model_id": "m1", "price_per_unit": 3},
                    {
                        "pipeline": "upscale",
                        "model_id": "default",
                        "price_per_unit": 5,
                        "pixels_per_unit": 2,
                    },
                    {"pipeline": "llm", "model_id": "big", "price_per_unit": 7},
                ]
            }
        ),
        fallback=(11, 1),
    )
    assert table.price("upscale", "m1") == (3, 1)
    assert table.price("upscale", "m2") == (5, 2)
    assert table.price("llm", "small") == (11, 1)
    bill = table.bill("upscale", "m2", 7)
    assert (bill.units, bill.price, bill.cost) == (7, (5, 2), 18)  # 7 x 5 / 2 rounded up


def test_prices_come_from_settings_in_go_livepeer_shape() -> None:
    doc = '{"capabilities_prices":[{"pipeline":"llm","model_id":"default","price_per_unit":2}]}'
    s = GatewaySettings(ai_prices=doc, ai_price_per_unit=9)
    assert PriceTable(s.ai_prices, (s.ai_price_per_unit, 1)).price("llm", "x") == (2, 1)
    bare = GatewaySettings(ai_prices='[{"pipeline":"llm","price_per_unit":4}]')
    assert bare.ai_prices.capabilities_prices[0].model_id == "default"
    with pytest.raises(ValidationError, match="price feed"):
        GatewaySettings(
            ai_prices='[{"pipeline":"llm","price_per_unit":1,"currency":"USD"}]',
        )
    with pytest.raises(ValidationError):
        GatewaySettings(ai_prices='[{"pipeline":"llm","price_per_unit":-1}]')


def test_undecodable_uploads_are_the_callers_error() -> None:
    with pytest.raises(BadRequest, match="image: not a decodable image"):
        units("upscale", {"prompt": "x"}, b"not a picture" * 50)
    # A video decodes too, but it is not a picture to price or upscale.
    for video in (make_segment(64, 48, 30, 0.5), make_segment(64, 48, 30, 0.5, fmt="mp4")):
        with pytest.raises(BadRequest, match=r"image: a video \(.*\), not an image"):
            units("upscale", {"prompt": "x"}, video)
    one_frame = make_segment(64, 48, 30, 1 / 30, audio=False, fmt="mp4")
    assert units("upscale", {"prompt": "x"}, one_frame) == 64 * 48
    assert units("upscale", {"prompt": "x"}, still_image(codec="mjpeg")) == 64 * 48
    with pytest.raises(BadRequest, match="audio: not an audio file"):
        units("audio-to-text", {}, still_image())


def test_audio_is_priced_by_what_it_holds_not_by_its_header() -> None:
    honest = mp3_audio(10.0)
    short_header = mp3_audio(10.0, header_frames=10)
    assert audio_seconds(honest).seconds == pytest.approx(10.0, abs=0.1)
    # The header says a quarter of a second; the packets, and the runner, last 10 s.
    assert audio_seconds(short_header).seconds == pytest.approx(10.0, abs=0.1)
    assert units("audio-to-text", {}, short_header) >= 10_000
