"""Local GPUs through NVML (``pynvml`` from nvidia-ml-py). Never raises to the caller.

NVML is initialised lazily on the first ``probe()``/``refresh_memory()`` and shut down at exit.
Every query is tolerant: a missing library, an unloaded driver, ``NotSupported`` or
``FunctionNotFound`` leave that field ``None``; only a failed ``nvmlInit`` sets ``ProbeResult.error``.
"""
from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from typing import Any, Callable

from torchbudget.hardware.derive import sm_count_from_cores

try:
    import pynvml
except ImportError:  # nvidia-ml-py not installed
    pynvml = None

# Memory transfers happen on both clock edges (DDR): NVML reports the memory clock such that
# bandwidth = bus_width_bits * max_memory_clock_hz * 2 / 8, e.g. H100 SXM 5120 b * 2619 MHz -> 3352 GB/s,
# RTX 4090 384 b * 10501 MHz -> 1008 GB/s, T4 256 b * 5001 MHz -> 320 GB/s.
DDR_FACTOR = 2


@dataclass(frozen=True)
class MemoryReading:
    total_bytes: int
    free_bytes: int
    used_bytes: int
    reserved_bytes: int | None = None  # driver/firmware reservation (v2 API only)


@dataclass(frozen=True)
class MigInstance:
    index: int
    name: str | None
    uuid: str | None
    memory: MemoryReading | None
    sm_count: int | None


@dataclass(frozen=True)
class LocalGpu:
    index: int
    name: str
    uuid: str | None = None
    memory: MemoryReading | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    sm_clock_rated_boost_mhz: int | None = None  # NVML "customer boost": the rated boost clock
    memory_clock_mhz: int | None = None
    memory_clock_max_mhz: int | None = None
    memory_bus_width_bits: int | None = None
    bandwidth_gbs: float | None = None  # derived: bus width * max memory clock * DDR_FACTOR / 8
    cuda_cores: int | None = None
    sm_count: int | None = None
    compute_capability: str | None = None  # "8.9"
    power_limit_w: float | None = None
    pcie_generation: int | None = None
    pcie_width: int | None = None
    mig_enabled: bool | None = None
    mig_instances: tuple[MigInstance, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    devices: tuple[LocalGpu, ...] = ()
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # "12.4"
    error: str | None = None  # why no device could be listed: "NVML library not found", ...


_lock = threading.Lock()
_initialised = False
_atexit_registered = False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe_init_failure(exc: BaseException) -> str:
    codes = {
        "NVML_ERROR_LIBRARY_NOT_FOUND": "NVML library not found: no NVIDIA driver installed",
        "NVML_ERROR_DRIVER_NOT_LOADED": "NVIDIA driver not loaded",
        "NVML_ERROR_NO_PERMISSION": "no permission to query the NVIDIA driver",
        "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "NVML library and driver versions differ (reboot needed?)",
    }
    value = getattr(exc, "value", None)
    for code_name, message in codes.items():
        if value is not None and value == getattr(pynvml, code_name, object()):
            return message
    return f"NVML failed to start: {exc}"


def _ensure_init() -> str | None:
    """Initialise NVML once; return the error text if it cannot be used."""
    global _initialised, _atexit_registered
    with _lock:
        if _initialised:
            return None
        if pynvml is None:
            return "nvidia-ml-py (pynvml) is not installed"
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError subclasses, OSError from a broken library
            return _describe_init_failure(exc)  # not cached: the driver may be loaded later
        _initialised = True
        if not _atexit_registered:
            atexit.register(_shutdown)
            _atexit_registered = True
        return None


def _shutdown() -> None:
    global _initialised
    with _lock:
        if _initialised and pynvml is not None:
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass
        _initialised = False


def _query(fn_name: str, *args) -> Any:
    """Call ``pynvml.<fn_name>(*args)``; None when the function or the query is unavailable."""
    fn: Callable | None = getattr(pynvml, fn_name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:  # NotSupported, FunctionNotFound, NoPermission, GPU lost, ...
        return None


def _memory(handle) -> MemoryReading | None:
    version = getattr(pynvml, "nvmlMemory_v2", None)
    info = _query("nvmlDeviceGetMemoryInfo", handle, version) if version is not None else None
    reserved = getattr(info, "reserved", None)
    if info is None:
        info = _query("nvmlDeviceGetMemoryInfo", handle)  # v1: no reserved field
    if info is None:
        return None
    return MemoryReading(int(info.total), int(info.free), int(info.used),
                         None if reserved is None else int(reserved))


def _compute_capability(handle) -> str | None:
    cc = _query("nvmlDeviceGetCudaComputeCapability", handle)
    return f"{cc[0]}.{cc[1]}" if cc else None


def _sm_count(handle, cuda_cores: int | None, compute_capability: str | None) -> int | None:
    attributes = _query("nvmlDeviceGetAttributes", handle)
    count = getattr(attributes, "multiprocessorCount", None)
    if count:
        return int(count)
    return sm_count_from_cores(cuda_cores, compute_capability)


def _mig_instances(handle) -> tuple[bool | None, tuple[MigInstance, ...]]:
    mode = _query("nvmlDeviceGetMigMode", handle)
    if not mode:
        return None, ()
    enabled = mode[0] == getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1)
    if not enabled:
        return False, ()
    instances = []
    for slot in range(_query("nvmlDeviceGetMaxMigDeviceCount", handle) or 0):
        mig = _query("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        if mig is None:
            continue  # empty slot
        name = _query("nvmlDeviceGetName", mig)
        uuid = _query("nvmlDeviceGetUUID", mig)
        attributes = _query("nvmlDeviceGetAttributes", mig)
        sm = getattr(attributes, "multiprocessorCount", None)
        instances.append(MigInstance(slot, None if name is None else _text(name),
                                     None if uuid is None else _text(uuid), _memory(mig),
                                     int(sm) if sm else None))
    return True, tuple(instances)


def _device(index: int) -> LocalGpu | None:
    handle = _query("nvmlDeviceGetHandleByIndex", index)
    if handle is None:
        return None
    sm_clock, mem_clock = getattr(pynvml, "NVML_CLOCK_SM", 1), getattr(pynvml, "NVML_CLOCK_MEM", 2)
    name = _query("nvmlDeviceGetName", handle)
    uuid = _query("nvmlDeviceGetUUID", handle)
    bus_width = _query("nvmlDeviceGetMemoryBusWidth", handle)
    mem_clock_max = _query("nvmlDeviceGetMaxClockInfo", handle, mem_clock)
    bandwidth = bus_width * mem_clock_max * 1e6 * DDR_FACTOR / 8 / 1e9 if bus_width and mem_clock_max else None
    rated_boost = _query("nvmlDeviceGetClock", handle, sm_clock,
                         getattr(pynvml, "NVML_CLOCK_ID_CUSTOMER_BOOST_MAX", 3))
    cores = _query("nvmlDeviceGetNumGpuCores", handle)
    cc = _compute_capability(handle)
    power_mw = _query("nvmlDeviceGetEnforcedPowerLimit", handle) or _query("nvmlDeviceGetPowerManagementLimit", handle)
    mig_enabled, mig = _mig_instances(handle)
    return LocalGpu(
        index=index,
        name=_text(name) if name is not None else f"GPU {index}",
        uuid=None if uuid is None else _text(uuid),
        memory=_memory(handle),
        sm_clock_mhz=_query("nvmlDeviceGetClockInfo", handle, sm_clock),
        sm_clock_max_mhz=_query("nvmlDeviceGetMaxClockInfo", handle, sm_clock),
        sm_clock_rated_boost_mhz=rated_boost or None,
        memory_clock_mhz=_query("nvmlDeviceGetClockInfo", handle, mem_clock),
        memory_clock_max_mhz=mem_clock_max,
        memory_bus_width_bits=bus_width,
        bandwidth_gbs=bandwidth,
        cuda_cores=cores or None,
        sm_count=_sm_count(handle, cores, cc),
        compute_capability=cc,
        power_limit_w=power_mw / 1000 if power_mw else None,
        # the link's maximum: the current link drops to Gen1 x1..x16 when the GPU idles
        pcie_generation=_query("nvmlDeviceGetMaxPcieLinkGeneration", handle),
        pcie_width=_query("nvmlDeviceGetMaxPcieLinkWidth", handle),
        mig_enabled=mig_enabled,
        mig_instances=mig,
    )


def _cuda_version_text(version: int | None) -> str | None:
    return None if not version else f"{version // 1000}.{version % 1000 // 10}"  # 12040 -> "12.4"


def probe() -> ProbeResult:
    """Everything NVML can tell about the local GPUs; ``error`` says why there are none."""
    error = _ensure_init()
    if error is not None:
        return ProbeResult(error=error)
    count = _query("nvmlDeviceGetCount")
    if count is None:
        return ProbeResult(error="NVML could not count the GPUs")
    devices = tuple(d for d in (_device(i) for i in range(count)) if d is not None)
    driver = _query("nvmlSystemGetDriverVersion")
    return ProbeResult(
        devices=devices,
        driver_version=None if driver is None else _text(driver),
        cuda_driver_version=_cuda_version_text(_query("nvmlSystemGetCudaDriverVersion")),
        error=None if devices else "NVML found no GPU",
    )


def refresh_memory(index: int) -> MemoryReading | None:
    """Live free/used/total of GPU ``index`` (for the GUI's poll); None when unavailable."""
    if _ensure_init() is not None:
        return None
    handle = _query("nvmlDeviceGetHandleByIndex", index)
    return None if handle is None else _memory(handle)


def _reset_for_tests() -> None:
    """Forget the init state so a test can swap the ``pynvml`` module object."""
    global _initialised
    with _lock:
        _initialised = False
