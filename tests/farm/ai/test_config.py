"""go-livepeer's -aiModels JSON: parsing, defaults and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.ai.config import AIModelConfig, load_ai_models, parse_ai_models
from farm.errors import ConfigError

LIVEPEER_EXAMPLE = [
    {
        "pipeline": "text-to-image",
        "model_id": "ByteDance/SDXL-Lightning",
        "price_per_unit": 4768371,
        "warm": True,
    },
    {
        "pipeline": "upscale",
        "model_id": "stabilityai/stable-diffusion-x4-upscaler",
        "price_per_unit": "0.5e-3",
        "pixels_per_unit": 1,
        "currency": "USD",
        "url": "http://gpu-box:8000",
        "token": "s3cret",
        "capacity": 2,
    },
]


def test_livepeer_shape_parses_with_defaults() -> None:
    models = parse_ai_models(json.dumps(LIVEPEER_EXAMPLE))
    t2i, up = models
    assert t2i == AIModelConfig(
        pipeline="text-to-image",
        model_id="ByteDance/SDXL-Lightning",
        warm=True,
        price_per_unit=4768371,
        runner="builtin",
    )
    assert t2i.capacity == 1 and t2i.url is None and t2i.pixels_per_unit == 1
    assert up.runner == "http" and up.url == "http://gpu-box:8000" and up.capacity == 2
    assert up.price_per_unit == "0.5e-3" and up.currency == "USD"
    assert "token" not in up.public() and "s3cret" not in repr(up)


def test_loads_from_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "aiModels.json"
    path.write_text(json.dumps(LIVEPEER_EXAMPLE[:1]))
    assert load_ai_models(str(path))[0].model_id == "ByteDance/SDXL-Lightning"
    assert load_ai_models(None) == () and load_ai_models("  ") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "not valid JSON"),
        ('{"pipeline": "upscale"}', "must be a JSON list"),
        ("[1]", "aiModels[0] must be an object"),
        ('[{"model_id": "m"}]', "pipeline is required"),
        ('[{"pipeline": "upscale"}]', "model_id is required"),
        ('[{"pipeline": "paint", "model_id": "m"}]', "unknown pipeline 'paint'"),
        ('[{"pipeline": "upscale", "model_id": "m", "capacity": "2"}]', "capacity has the wrong"),
        ('[{"pipeline": "upscale", "model_id": "m", "capacity": true}]', "capacity has the wrong"),
        ('[{"pipeline": "upscale", "model_id": "m", "capacity": 0}]', "at least 1"),
        ('[{"pipeline": "upscale", "model_id": "m", "warm": "yes"}]', "warm has the wrong"),
        ('[{"pipeline": "upscale", "model_id": "m", "gpu": 1}]', "unknown field(s) gpu"),
        ('[{"pipeline": "upscale", "model_id": "m", "url": "gpu-box:8000"}]', "http(s) URL"),
        ('[{"pipeline": "upscale", "model_id": "m", "runner": "http"}]', "needs a url"),
        ('[{"pipeline": "upscale", "model_id": "m", "runner": "docker"}]', "runner must be"),
        (
            '[{"pipeline": "upscale", "model_id": "m", "runner": "process", "url": "http://x"}]',
            "takes no url",
        ),
        ('[{"pipeline": "upscale", "model_id": "m", "price_per_unit": -1}]', "not be negative"),
        (
            '[{"pipeline": "upscale", "model_id": "m"}, {"pipeline": "upscale", "model_id": "m"}]',
            "twice",
        ),
    ],
)
def test_bad_input_is_a_clear_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_ai_models(text)
    assert message in str(error.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_ai_models(str(tmp_path / "nope.json"))


def _worker(tmp_path: Path, models: str) -> tuple[int, str]:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    done = subprocess.run(
        [sys.executable, "-m", "farm.cli", "worker", "--cpu", "--ai-models", models],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    return done.returncode, done.stderr.decode().strip()


def test_worker_refuses_bad_ai_models_before_starting(tmp_path: Path) -> None:
    bad = '[{"pipeline": "upscale", "model_id": "m", "capacity": 0}]'
    assert _worker(tmp_path, bad) == (1, "error: aiModels[0].capacity must be at least 1")
    llm = '[{"pipeline": "llm", "model_id": "meta-llama/llama-3.1-8B-Instruct"}]'
    code, err = _worker(tmp_path, llm)
    assert code == 1 and "no built-in runner for llm" in err
