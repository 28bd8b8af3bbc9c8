"""The orchestrator's AI parts without a cluster: units, prices, the image-to-video MP4."""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import pytest

from farm.errors import RunnerFailed
from farm.golivepeer import net_pb2
from farm.orchestrator.aiprices import ai_price_infos, model_prices, quoted_price
from farm.orchestrator.aireq import AI_PIPELINES, ParsedAIRequest, parse_json, units
from farm.orchestrator.aivideo import frames_to_mp4
from farm.orchestrator.service import SegmentRefused
from farm.registry import Capabilities
from tests.factories import wav_audio
from tests.farm.ai.helpers import picture, png


def _req(pipeline: str, params: dict[str, Any], **files: bytes) -> ParsedAIRequest:
    return ParsedAIRequest(AI_PIPELINES[pipeline], "m", params, files)


def test_units_are_golivepeers() -> None:
    image = png(picture(30, 20))
    assert units(_req("text-to-image", {})) == 512 * 512
    assert units(
        _req("text-to-image", {"height": 64, "width": 32, "num_images_per_prompt": 3})
    ) == (64 * 32 * 3)
    assert units(_req("image-to-image", {"num_images_per_prompt": "2"}, image=image)) == 1200
    assert units(_req("image-to-video", {})) == 576 * 1024 * 25
    assert units(_req("image-to-video", {"height": "50", "width": "66"})) == 50 * 66 * 25
    for pipeline in ("upscale", "segment-anything-2", "image-to-text"):
        assert units(_req(pipeline, {}, image=image)) == 600
    assert units(_req("audio-to-text", {}, audio=wav_audio(0.5))) == 500
    assert units(_req("llm", {"max_tokens": 77})) == 77
    # 1000 per character, not per byte: "é" is one.
    assert units(_req("text-to-speech", {"text": "café"})) == 4000


@pytest.mark.parametrize(
    ("pipeline", "params", "files", "text"),
    [
        ("llm", {}, {}, "MaxTokens not specified"),
        ("llm", {"max_tokens": 0}, {}, "max_tokens must be an integer from 1 to 2147483647"),
        ("text-to-image", {"height": "big"}, {}, "height must be an integer"),
        ("text-to-image", {"width": -5}, {}, "width must be an integer from 1 to 8192"),
        ("text-to-image", {"width": True}, {}, "width must be an integer from 1 to 8192"),
        ("text-to-speech", {}, {}, "text is required"),
        ("audio-to-text", {}, {"audio": b"nothing audible"}, "Unable to calculate duration"),
        ("audio-to-text", {}, {"audio": png(picture(8, 8))}, "Unable to calculate duration"),
    ],
)
def test_units_refuse_what_cannot_be_priced(
    pipeline: str, params: dict[str, Any], files: dict[str, bytes], text: str
) -> None:
    with pytest.raises(SegmentRefused) as refused:
        units(_req(pipeline, params, **files))
    assert (refused.value.status, str(refused.value)) == (400, text)


def test_undecodable_image_is_a_bad_request() -> None:
    with pytest.raises(SegmentRefused) as refused:
        units(_req("upscale", {}, image=b"\x89PNG but not really"))
    assert refused.value.status == 400 and str(refused.value).startswith("image: unknown format")


def test_json_body_must_be_an_object() -> None:
    llm = AI_PIPELINES["llm"]
    assert parse_json(llm, b'{"model": "x", "max_tokens": 3}').model_id == "x"
    for body in (b"[1]", b"{", b"NaN", b'"text"'):
        with pytest.raises(SegmentRefused) as refused:
            parse_json(llm, body)
        assert refused.value.status == 400


def _worker(name: str, *models: dict[str, Any]) -> Capabilities:
    return Capabilities(worker=name, queues=[], capacity=1, ai_models=list(models))


def test_prices_from_the_workers_models() -> None:
    live = [
        _worker(
            "a",
            {"pipeline": "upscale", "model_id": "up", "price_per_unit": 4, "pixels_per_unit": 3},
            {"pipeline": "llm", "model_id": "chat", "price_per_unit": "0.5"},
            {
                "pipeline": "text-to-image",
                "model_id": "usd",
                "price_per_unit": 1,
                "currency": "USD",
            },
            {"pipeline": "text-to-image", "model_id": "free"},
        ),
        # Another worker asks more for the same model: the higher price is quoted.
        _worker(
            "b",
            {"pipeline": "upscale", "model_id": "up", "price_per_unit": 2, "pixels_per_unit": 1},
            {"pipeline": "no-such-pipeline", "model_id": "x", "price_per_unit": 9},
        ),
    ]
    assert model_prices(live) == {
        ("upscale", "up"): 2,
        ("llm", "chat"): Fraction(1, 2),
        ("text-to-image", "free"): 0,
    }
    infos = {
        (p.capability, p.constraint): (p.pricePerUnit, p.pixelsPerUnit)
        for p in ai_price_infos(live)
    }
    assert infos == {(30, "up"): (2, 1), (33, "chat"): (1, 2), (27, "free"): (0, 1)}

    caps = net_pb2.Capabilities()
    assert quoted_price(caps, live) is None
    caps.constraints.PerCapability[30].models["up"].warm = True
    assert quoted_price(caps, live) == 2
    caps.constraints.PerCapability[33].models["chat"].warm = True
    caps.constraints.PerCapability[27].models["usd"].warm = True  # unpriced: adds nothing
    assert quoted_price(caps, live) == Fraction(5, 2)


def test_frames_become_an_h264_mp4() -> None:
    pictures = [png(picture(33, 21, shift=i)) for i in range(9)]
    with av.open(io.BytesIO(frames_to_mp4(pictures, fps=8)), "r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        # 4:2:0 needs even sides.
        assert (stream.width, stream.height) == (32, 20)
        assert stream.average_rate == 8
        frames = list(container.decode(video=0))
        assert len(frames) == 9 and frames[0].key_frame
        assert float(container.duration or 0) / av.time_base == pytest.approx(9 / 8, abs=0.01)
    with pytest.raises(RunnerFailed):
        frames_to_mp4([])
    with pytest.raises(RunnerFailed):
        frames_to_mp4([pictures[0], b"not a picture"])
