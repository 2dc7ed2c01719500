"""A fake ``pynvml`` module for the hardware tests (CI has no GPU).

It reuses the real package's error classes and constants, so the code under test sees the same
exception types as on a real machine; the device data and which calls fail are up to each test.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import pynvml as real_pynvml
import pytest

from torchbudget.hardware import catalog, nvml


@dataclass
class FakeMig:
    name: str
    total: int
    free: int
    sm_count: int


@dataclass
class FakeDevice:
    name: str = "NVIDIA GeForce RTX 4090"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    total: int = 25757220864  # 24564 MiB, what nvidia-smi shows for a 4090
    free: int = 20 * 2**30
    used: int = 3 * 2**30
    reserved: int = 300 * 2**20
    sm_clock: int = 210
    sm_clock_max: int = 3105  # NVML max clock, above the rated boost
    rated_boost: int = 2520
    mem_clock: int = 405
    mem_clock_max: int = 10501
    bus_width: int = 384
    cores: int = 16384
    cc: tuple[int, int] = (8, 9)
    power_mw: int = 450_000
    pcie: tuple[int, int] = (4, 16)
    mig: list[FakeMig] | None = None  # None: MIG unsupported; []: supported, disabled
    fail: dict[str, int] = field(default_factory=dict)  # pynvml function name -> NVML error code


def _error(code: int) -> Exception:
    return real_pynvml.NVMLError(code)


def make_fake_pynvml(devices: list[FakeDevice], *, init_error: int | None = None, driver: str = "550.54.14",
                     cuda_version: int = 12040, without: tuple[str, ...] = ()) -> types.ModuleType:
    """A module with pynvml's names; ``without`` removes functions/constants (an older pynvml)."""
    fake = types.ModuleType("pynvml")
    for name in dir(real_pynvml):
        if name.startswith(("NVML_", "NVMLError")) or name == "nvmlMemory_v2":
            setattr(fake, name, getattr(real_pynvml, name))
    fake.calls = []
    handles: dict[object, tuple[FakeDevice, FakeMig | None]] = {}

    def api(fn):
        def wrapper(*args):
            fake.calls.append(fn.__name__)
            target = handles.get(args[0]) if args else None
            device = target[0] if target else None
            if device is not None and fn.__name__ in device.fail:
                raise _error(device.fail[fn.__name__])
            return fn(*args)
        wrapper.__name__ = fn.__name__
        setattr(fake, fn.__name__, wrapper)
        return wrapper

    @api
    def nvmlInit():
        if init_error is not None:
            raise _error(init_error)

    @api
    def nvmlShutdown():
        pass

    @api
    def nvmlDeviceGetCount():
        return len(devices)

    @api
    def nvmlSystemGetDriverVersion():
        return driver

    @api
    def nvmlSystemGetCudaDriverVersion():
        return cuda_version

    def nvmlDeviceGetHandleByIndex(index):
        fake.calls.append("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(devices):
            raise _error(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
        handle = ("gpu", index)
        handles[handle] = (devices[index], None)
        return handle
    fake.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex

    def _mig_or_device(handle):
        device, mig = handles[handle]
        return mig if mig is not None else device

    @api
    def nvmlDeviceGetName(handle):
        return _mig_or_device(handle).name

    @api
    def nvmlDeviceGetUUID(handle):
        device, mig = handles[handle]
        return device.uuid if mig is None else f"MIG-{device.uuid[4:]}-{mig.name[-6:]}"

    @api
    def nvmlDeviceGetMemoryInfo(handle, version=None):
        device, mig = handles[handle]
        if version and "nvmlDeviceGetMemoryInfo_v2" in device.fail:
            raise _error(device.fail["nvmlDeviceGetMemoryInfo_v2"])
        if mig is not None:
            return types.SimpleNamespace(total=mig.total, free=mig.free, used=mig.total - mig.free,
                                         **({"reserved": 0} if version else {}))
        fields = {"total": device.total, "free": device.free, "used": device.used}
        if version:
            fields["reserved"] = device.reserved
        return types.SimpleNamespace(**fields)

    @api
    def nvmlDeviceGetClockInfo(handle, clock_type):
        device = handles[handle][0]
        return device.sm_clock if clock_type == real_pynvml.NVML_CLOCK_SM else device.mem_clock

    @api
    def nvmlDeviceGetMaxClockInfo(handle, clock_type):
        device = handles[handle][0]
        return device.sm_clock_max if clock_type == real_pynvml.NVML_CLOCK_SM else device.mem_clock_max

    @api
    def nvmlDeviceGetClock(handle, clock_type, clock_id):
        assert clock_id == real_pynvml.NVML_CLOCK_ID_CUSTOMER_BOOST_MAX
        return handles[handle][0].rated_boost

    @api
    def nvmlDeviceGetMemoryBusWidth(handle):
        return handles[handle][0].bus_width

    @api
    def nvmlDeviceGetNumGpuCores(handle):
        return handles[handle][0].cores

    @api
    def nvmlDeviceGetAttributes(handle):
        device, mig = handles[handle]
        if mig is None:  # like older drivers: only MIG devices report attributes
            raise _error(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
        return types.SimpleNamespace(multiprocessorCount=mig.sm_count)

    @api
    def nvmlDeviceGetCudaComputeCapability(handle):
        return handles[handle][0].cc

    @api
    def nvmlDeviceGetEnforcedPowerLimit(handle):
        return handles[handle][0].power_mw

    @api
    def nvmlDeviceGetPowerManagementLimit(handle):
        return handles[handle][0].power_mw

    @api
    def nvmlDeviceGetMaxPcieLinkGeneration(handle):
        return handles[handle][0].pcie[0]

    @api
    def nvmlDeviceGetMaxPcieLinkWidth(handle):
        return handles[handle][0].pcie[1]

    @api
    def nvmlDeviceGetMigMode(handle):
        device = handles[handle][0]
        if device.mig is None:
            raise _error(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
        enabled = real_pynvml.NVML_DEVICE_MIG_ENABLE if device.mig else real_pynvml.NVML_DEVICE_MIG_DISABLE
        return [enabled, enabled]

    @api
    def nvmlDeviceGetMaxMigDeviceCount(handle):
        return 7

    @api
    def nvmlDeviceGetMigDeviceHandleByIndex(handle, slot):
        device = handles[handle][0]
        if slot >= len(device.mig or []):
            raise _error(real_pynvml.NVML_ERROR_NOT_FOUND)
        mig_handle = ("mig", handle[1], slot)
        handles[mig_handle] = (device, device.mig[slot])
        return mig_handle

    for name in without:
        delattr(fake, name)
    return fake


@pytest.fixture
def isolated_config(tmp_path, monkeypatch):
    """Point the user hardware file at tmp_path and start from a fresh catalogue."""
    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(tmp_path / "config"))
    catalog.reload()
    yield tmp_path / "config"
    catalog.reload()


@pytest.fixture
def install_fake(monkeypatch, isolated_config):
    """``install_fake(module_or_None)`` replaces the pynvml module object hardware.nvml uses."""
    def install(module):
        nvml._reset_for_tests()
        monkeypatch.setattr(nvml, "pynvml", module)
        return module
    yield install
    nvml._reset_for_tests()
