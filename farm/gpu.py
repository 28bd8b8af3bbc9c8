"""GPU discovery through NVML.

No driver, no GPU or a broken NVML all mean the same thing to the farm: a CPU worker.
:class:`NvmlSource` is the interface the rest of the farm needs; :class:`PynvmlSource` reads
the real library and :class:`StaticGpuSource` (beside it, for machines without a GPU and for
tests of routing) returns a fixed inventory.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = [
    "GpuInfo",
    "GpuInventory",
    "NvmlSource",
    "PynvmlSource",
    "StaticGpuSource",
    "detect_gpus",
    "parse_gpu_selection",
]

log = logging.getLogger(__name__)

# NVENC session limits of consumer (GeForce) cards; data-centre and pro cards have none.
# The limit counts encode sessions, so every rendition of a segment uses one.
GEFORCE_NVENC_SESSIONS = 8


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as NVML reports it."""

    index: int
    name: str
    uuid: str
    memory_total: int
    memory_free: int
    utilization_gpu: int | None = None
    utilization_encoder: int | None = None
    utilization_decoder: int | None = None
    encoder_sessions: int = 0
    #: Concurrent NVENC sessions the card allows; None where the driver sets no limit.
    encoder_session_limit: int | None = None

    @property
    def free_encoder_sessions(self) -> int | None:
        if self.encoder_session_limit is None:
            return None
        return max(0, self.encoder_session_limit - self.encoder_sessions)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["free_encoder_sessions"] = self.free_encoder_sessions
        return d


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """What NVML said: the GPUs, the driver version, or why there are none."""

    gpus: tuple[GpuInfo, ...] = ()
    driver: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "error": self.error,
            "gpus": [g.to_dict() for g in self.gpus],
        }


class NvmlSource(Protocol):
    """Anything that can list this machine's GPUs."""

    def inventory(self) -> GpuInventory: ...


def _session_limit(name: str) -> int | None:
    lowered = name.lower()
    if "geforce" in lowered or "titan" in lowered:
        return GEFORCE_NVENC_SESSIONS
    return None


class PynvmlSource:
    """Reads GPUs from the NVIDIA driver with ``pynvml`` (the nvidia-ml-py distribution)."""

    def inventory(self) -> GpuInventory:
        try:
            import pynvml
        except ImportError as e:  # pragma: no cover - a dependency of the project
            return GpuInventory(error=f"pynvml not installed: {e}")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            return GpuInventory(error=f"NVML unavailable: {e}")
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                gpus.append(self._read(pynvml, i))
            return GpuInventory(gpus=tuple(gpus), driver=driver)
        except pynvml.NVMLError as e:
            return GpuInventory(error=f"NVML query failed: {e}")
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

    @staticmethod
    def _read(pynvml: Any, index: int) -> GpuInfo:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(pynvml.nvmlDeviceGetName(handle))
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)

        def optional(fn: Any, *args: Any) -> Any:
            try:
                return fn(handle, *args)
            except pynvml.NVMLError:
                return None

        util = optional(pynvml.nvmlDeviceGetUtilizationRates)
        enc = optional(pynvml.nvmlDeviceGetEncoderUtilization)
        dec = optional(pynvml.nvmlDeviceGetDecoderUtilization)
        sessions = optional(pynvml.nvmlDeviceGetEncoderSessions)
        return GpuInfo(
            index=index,
            name=name,
            uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
            memory_total=int(mem.total),
            memory_free=int(mem.free),
            utilization_gpu=int(util.gpu) if util is not None else None,
            utilization_encoder=int(enc[0]) if enc else None,
            utilization_decoder=int(dec[0]) if dec else None,
            encoder_sessions=len(sessions) if sessions else 0,
            encoder_session_limit=_session_limit(name),
        )


class StaticGpuSource:
    """A fixed GPU inventory, for machines without NVIDIA hardware (tests, demos)."""

    def __init__(self, gpus: Sequence[GpuInfo] = (), driver: str | None = "static") -> None:
        self._inventory = GpuInventory(gpus=tuple(gpus), driver=driver)

    def inventory(self) -> GpuInventory:
        return self._inventory


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def detect_gpus(source: NvmlSource | None = None) -> GpuInventory:
    """This machine's GPUs; an empty inventory with a reason when there are none."""
    inventory = (source or PynvmlSource()).inventory()
    # NVML lists every GPU of the machine; CUDA in this process sees only those the container
    # runtime (or the operator) left in CUDA_VISIBLE_DEVICES. The list must be the one CUDA
    # reads, from this process's environment, so it is no setting.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and inventory.gpus:
        keep = {v.strip() for v in visible.split(",") if v.strip()}
        inventory = GpuInventory(
            gpus=tuple(g for g in inventory.gpus if str(g.index) in keep or g.uuid in keep),
            driver=inventory.driver,
            error=inventory.error,
        )
    if inventory.error:
        log.info("no GPU: %s", inventory.error)
    return inventory


def parse_gpu_selection(spec: str, available: int) -> list[int]:
    """GPU indices from ``all``, ``none`` or ``0,2`` (go-livepeer's ``-nvidia``)."""
    from farm.errors import ConfigError

    spec = spec.strip().lower()
    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(range(available))
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus takes all, none or indices like 0,1; got {spec!r}") from None
    missing = [i for i in indices if i < 0 or i >= available]
    if missing:
        raise ConfigError(
            f"GPU {missing[0]} not found: this machine has {available} GPU(s) visible to NVML"
        )
    return sorted(set(indices))
