"""Routing by GPU capability, and the registry's heartbeats in real Redis."""

from __future__ import annotations

import time

import pytest

from farm.errors import NoCapacity
from farm.gpu import GpuInfo, StaticGpuSource, detect_gpus
from farm.queues import stream_queue
from farm.registry import Capabilities, Registry
from farm.router import Need, route_stream, route_transcode
from farm.settings import WorkerSettings
from farm.worker import plan_worker


def cpu_worker(name: str = "cpu@a:1") -> Capabilities:
    return Capabilities(
        worker=name, queues=["transcode.cpu.h264", "farm.control"], capacity=2, cpu_codecs=["h264"]
    )


def gpu_worker(name: str = "gpu0@b:1", free: int | None = None) -> Capabilities:
    return Capabilities(
        worker=name,
        queues=["transcode.gpu.h264", "farm.control"],
        capacity=4,
        gpu_codecs=["h264"],
        gpus=[{"index": 0, "name": "NVIDIA L4"}],
        free_encoder_sessions=free,
    )


def test_gpu_worker_alive_takes_gpu_queue() -> None:
    route = route_transcode(Need("h264", 3), [cpu_worker(), gpu_worker()])
    assert route.queue == "transcode.gpu.h264" and route.gpu
    assert route.workers == ("gpu0@b:1",)


def test_no_gpu_worker_sends_jobs_to_cpu() -> None:
    route = route_transcode(Need("h264", 3), [cpu_worker()])
    assert route.queue == "transcode.cpu.h264" and not route.gpu


def test_consumer_nvenc_session_limit_counts_renditions() -> None:
    geforce = gpu_worker(free=2)
    assert route_transcode(Need("h264", 2), [geforce, cpu_worker()]).gpu
    assert route_transcode(Need("h264", 3), [geforce, cpu_worker()]).queue == "transcode.cpu.h264"
    with pytest.raises(NoCapacity, match="NVENC"):
        route_transcode(Need("h264", 3, device="gpu"), [geforce])


def test_unservable_need_is_a_clear_error() -> None:
    with pytest.raises(NoCapacity, match="no capacity for hevc transcode of 1 rendition"):
        route_transcode(Need("hevc", 1), [cpu_worker(), gpu_worker()])
    with pytest.raises(NoCapacity, match="no live workers"):
        route_transcode(Need("h264", 1), [])


def _streaming(w: Capabilities) -> Capabilities:
    w.queues.append(stream_queue(w.worker))
    return w


def test_a_streams_next_segment_goes_to_the_worker_that_keeps_its_encoders() -> None:
    live = [_streaming(cpu_worker("cpu@a:1")), _streaming(cpu_worker("cpu@b:1"))]
    need = Need("h264", 2)
    route = route_stream(need, live, "cpu@b:1")
    assert (route.queue, route.workers, route.gpu) == ("transcode@cpu@b:1", ("cpu@b:1",), False)
    # No pin, a pinned worker that is gone, or one without its own queue: the capability queue.
    assert route_stream(need, live, None).queue == "transcode.cpu.h264"
    assert route_stream(need, live, "cpu@gone:1").queue == "transcode.cpu.h264"
    assert route_stream(need, [cpu_worker("cpu@b:1")], "cpu@b:1").queue == "transcode.cpu.h264"
    # A pinned worker that no longer serves what the segment would be routed to (a GPU came).
    with_gpu = [*live, _streaming(gpu_worker())]
    assert route_stream(need, with_gpu, "cpu@b:1").queue == "transcode.gpu.h264"
    assert route_stream(need, with_gpu, "gpu0@b:1").queue == "transcode@gpu0@b:1"


def test_registry_pins_a_stream_to_a_worker_for_a_while(redis_url: str) -> None:
    registry = Registry(redis_url, 0.5)
    try:
        assert registry.pinned("s/m") is None
        registry.pin_stream("s/m", "cpu@a:1", 0.3)
        assert registry.pinned("s/m") == "cpu@a:1"
        time.sleep(0.4)
        assert registry.pinned("s/m") is None
    finally:
        registry.close()


def test_worker_plan_without_nvenc_takes_cpu_queues() -> None:
    # This machine has no NVENC: a worker pinned to a (static) GPU decodes there at best and
    # encodes on the CPU, so it consumes the CPU queues, as an H100 worker does.
    h100 = GpuInfo(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-0",
        memory_total=80 << 30,
        memory_free=80 << 30,
    )
    plan = plan_worker(WorkerSettings(codecs=("h264", "hevc")), h100)
    assert plan.gpu_codecs == ()
    assert "transcode.cpu.h264" in plan.queues and "transcode.gpu.h264" not in plan.queues
    assert plan.name.startswith("gpu0@")


def test_nvml_absent_means_cpu_not_crash() -> None:
    inventory = detect_gpus()
    assert inventory.gpus == () and inventory.error
    static = detect_gpus(
        StaticGpuSource(
            [
                GpuInfo(
                    0,
                    "NVIDIA GeForce RTX 4090",
                    "GPU-x",
                    1,
                    1,
                    encoder_sessions=3,
                    encoder_session_limit=8,
                )
            ]
        )
    )
    assert static.gpus[0].free_encoder_sessions == 5


def test_registry_heartbeats_expire(redis_url: str) -> None:
    registry = Registry(redis_url, heartbeat_s=0.4)
    try:
        registry.beat(cpu_worker("cpu@x:1"))
        registry.beat(gpu_worker("gpu0@y:2"))
        assert [w.worker for w in registry.live()] == ["cpu@x:1", "gpu0@y:2"]
        registry.remove("gpu0@y:2")
        assert [w.worker for w in registry.live()] == ["cpu@x:1"]
        time.sleep(1.5)  # three missed beats
        assert registry.live() == []
    finally:
        registry.close()
