"""GPU discovery: no driver means an empty inventory with a reason, never an exception."""

from __future__ import annotations

import pytest

from farm.errors import ConfigError
from farm.gpu import (
    GEFORCE_NVENC_SESSIONS,
    GpuInfo,
    GpuInventory,
    PynvmlSource,
    StaticGpuSource,
    detect_gpus,
    parse_gpu_selection,
)
from farm.media.codecs import choose_encoder, hardware_report

NO_GPU = not detect_gpus().gpus


def _gpu(index: int, name: str = "NVIDIA H100 80GB HBM3", sessions: int = 0) -> GpuInfo:
    return GpuInfo(
        index=index,
        name=name,
        uuid=f"GPU-{index:08d}",
        memory_total=80 << 30,
        memory_free=60 << 30,
        encoder_sessions=sessions,
    )


@pytest.mark.skipif(not NO_GPU, reason="NVML sees a GPU on this machine")
def test_detect_gpus_without_driver_is_empty_with_reason() -> None:
    inventory = detect_gpus()
    assert isinstance(inventory, GpuInventory)
    assert inventory.gpus == ()
    assert inventory.driver is None
    assert isinstance(inventory.error, str) and inventory.error
    assert inventory.to_dict() == {"driver": None, "error": inventory.error, "gpus": []}
    assert PynvmlSource().inventory().error  # the source itself does not raise either


@pytest.mark.skipif(not NO_GPU, reason="NVML sees a GPU on this machine")
def test_no_nvenc_here_so_cpu_encoders_are_chosen() -> None:
    report = hardware_report()
    assert not any(report["encoders"].values())
    assert not any(report["decoders"].values())
    choice = choose_encoder("H.264", prefer_gpu=True)
    assert choice is not None and (choice.codec, choice.hardware) == ("libx264", False)
    hevc = choose_encoder("HEVC")
    assert hevc is not None and hevc.codec == "libx265"


def test_static_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    source = StaticGpuSource([_gpu(0), _gpu(1, "NVIDIA GeForce RTX 4090", sessions=3)])
    inventory = detect_gpus(source)
    assert [g.index for g in inventory.gpus] == [0, 1]
    assert inventory.driver == "static" and inventory.error is None
    h100, geforce = inventory.gpus
    assert h100.free_encoder_sessions is None
    as_dict = inventory.to_dict()
    assert as_dict["gpus"][1]["free_encoder_sessions"] == geforce.free_encoder_sessions
    assert StaticGpuSource().inventory().gpus == ()


def test_pynvml_session_limits() -> None:
    limited = GpuInfo(
        0, "NVIDIA GeForce RTX 3080", "GPU-x", 1, 1, encoder_sessions=3,
        encoder_session_limit=GEFORCE_NVENC_SESSIONS,
    )  # fmt: skip
    assert limited.free_encoder_sessions == GEFORCE_NVENC_SESSIONS - 3
    full = GpuInfo(0, "g", "u", 1, 1, encoder_sessions=99, encoder_session_limit=8)
    assert full.free_encoder_sessions == 0


@pytest.mark.parametrize(
    ("visible", "kept"),
    [("1", [1]), ("0,2", [0, 2]), ("GPU-00000002", [2]), ("", []), (" 0 , 1 ", [0, 1])],
)
def test_cuda_visible_devices_filters(
    visible: str, kept: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    inventory = detect_gpus(StaticGpuSource([_gpu(0), _gpu(1), _gpu(2)]))
    assert [g.index for g in inventory.gpus] == kept


@pytest.mark.parametrize(
    ("spec", "available", "expected"),
    [
        ("all", 2, [0, 1]),
        ("all", 0, []),
        ("none", 4, []),
        ("", 4, []),
        ("NONE", 4, []),
        ("0,1", 2, [0, 1]),
        ("1,0,1", 2, [0, 1]),
        (" 1 ", 2, [1]),
    ],
)
def test_parse_gpu_selection(spec: str, available: int, expected: list[int]) -> None:
    assert parse_gpu_selection(spec, available) == expected


@pytest.mark.parametrize(
    ("spec", "available", "message"),
    [
        ("7", 2, "GPU 7 not found"),
        ("0", 0, "GPU 0 not found"),
        ("-1", 2, "GPU -1 not found"),
        ("x", 2, "takes all, none or indices"),
        ("0,a", 2, "takes all, none or indices"),
    ],
)
def test_parse_gpu_selection_errors(spec: str, available: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_gpu_selection(spec, available)
