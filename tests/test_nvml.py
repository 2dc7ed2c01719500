"""hardware.nvml against a fake pynvml: every failure mode leaves a field None, never raises."""
from __future__ import annotations

import dataclasses

import pynvml as real_pynvml
import pytest

from torchbudget.hardware import nvml
from tests.hardware_fakes import FakeDevice, FakeMig, install_fake, isolated_config, make_fake_pynvml  # noqa: F401

NOT_SUPPORTED = real_pynvml.NVML_ERROR_NOT_SUPPORTED
FUNCTION_NOT_FOUND = real_pynvml.NVML_ERROR_FUNCTION_NOT_FOUND


def test_without_the_pynvml_package_probe_reports_why(install_fake):
    install_fake(None)
    result = nvml.probe()
    assert result.devices == ()
    assert "not installed" in result.error
    assert nvml.refresh_memory(0) is None


@pytest.mark.parametrize("code, words", [
    (real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML library not found"),
    (real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver not loaded"),
    (real_pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
    (real_pynvml.NVML_ERROR_UNKNOWN, "NVML failed to start"),
])
def test_init_failure_gives_no_devices_and_a_reason(install_fake, code, words):
    install_fake(make_fake_pynvml([FakeDevice()], init_error=code))
    result = nvml.probe()
    assert result.devices == ()
    assert words in result.error
    assert nvml.refresh_memory(0) is None


def test_one_gpu_every_field(install_fake):
    device = FakeDevice()
    install_fake(make_fake_pynvml([device]))
    result = nvml.probe()
    assert result.error is None
    assert result.driver_version == "550.54.14"
    assert result.cuda_driver_version == "12.4"
    (gpu,) = result.devices
    assert gpu.index == 0 and gpu.name == device.name and gpu.uuid == device.uuid
    assert gpu.memory == nvml.MemoryReading(device.total, device.free, device.used, device.reserved)
    assert (gpu.sm_clock_mhz, gpu.sm_clock_max_mhz, gpu.sm_clock_rated_boost_mhz) == (210, 3105, 2520)
    assert (gpu.memory_clock_mhz, gpu.memory_clock_max_mhz) == (405, 10501)
    # bus width x max memory clock x 2 (DDR) / 8 bits: the RTX 4090's published 1008 GB/s
    assert gpu.bandwidth_gbs == pytest.approx(384 * 10501e6 * 2 / 8 / 1e9)
    assert gpu.bandwidth_gbs == pytest.approx(1008, rel=1e-3)
    assert gpu.cuda_cores == 16384
    assert gpu.sm_count == 16384 // 128  # Ada: 128 FP32 cores per SM
    assert gpu.compute_capability == "8.9"
    assert gpu.power_limit_w == 450
    assert (gpu.pcie_generation, gpu.pcie_width) == (4, 16)
    assert gpu.mig_enabled is None and gpu.mig_instances == ()


def test_several_gpus_keep_their_indices(install_fake):
    devices = [FakeDevice(name="NVIDIA A100-SXM4-80GB", uuid=f"GPU-{i}", cc=(8, 0), cores=6912) for i in range(3)]
    devices[1] = dataclasses.replace(devices[1], name="NVIDIA H100 80GB HBM3", cc=(9, 0), cores=16896)
    install_fake(make_fake_pynvml(devices))
    result = nvml.probe()
    assert [g.index for g in result.devices] == [0, 1, 2]
    assert [g.name for g in result.devices] == ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"]
    assert [g.uuid for g in result.devices] == ["GPU-0", "GPU-1", "GPU-2"]
    assert [g.sm_count for g in result.devices] == [108, 132, 108]


FIELD_OF_CALL = {
    "nvmlDeviceGetName": ("name", "GPU 0"),
    "nvmlDeviceGetUUID": ("uuid", None),
    "nvmlDeviceGetClockInfo": ("sm_clock_mhz", None),
    "nvmlDeviceGetMaxClockInfo": ("sm_clock_max_mhz", None),
    "nvmlDeviceGetClock": ("sm_clock_rated_boost_mhz", None),
    "nvmlDeviceGetMemoryBusWidth": ("memory_bus_width_bits", None),
    "nvmlDeviceGetNumGpuCores": ("cuda_cores", None),
    "nvmlDeviceGetCudaComputeCapability": ("compute_capability", None),
    "nvmlDeviceGetMaxPcieLinkGeneration": ("pcie_generation", None),
    "nvmlDeviceGetMaxPcieLinkWidth": ("pcie_width", None),
}


@pytest.mark.parametrize("code", [NOT_SUPPORTED, FUNCTION_NOT_FOUND])
@pytest.mark.parametrize("call", sorted(FIELD_OF_CALL))
def test_a_failing_query_blanks_only_its_field(install_fake, call, code):
    install_fake(make_fake_pynvml([FakeDevice(fail={call: code})]))
    (gpu,) = nvml.probe().devices
    field, expected = FIELD_OF_CALL[call]
    assert getattr(gpu, field) == expected
    untouched = {"memory_bus_width_bits": 384, "compute_capability": "8.9", "pcie_width": 16}
    for other, value in untouched.items():
        if other != field:
            assert getattr(gpu, other) == value


def test_missing_bus_width_or_max_memory_clock_gives_no_bandwidth(install_fake):
    install_fake(make_fake_pynvml([FakeDevice(fail={"nvmlDeviceGetMemoryBusWidth": NOT_SUPPORTED})]))
    (gpu,) = nvml.probe().devices
    assert gpu.bandwidth_gbs is None


def test_functions_absent_from_an_old_pynvml_are_tolerated(install_fake):
    old = make_fake_pynvml([FakeDevice()], without=("nvmlDeviceGetNumGpuCores", "nvmlDeviceGetMemoryBusWidth",
                                                    "nvmlDeviceGetClock", "nvmlDeviceGetMigMode", "nvmlMemory_v2"))
    install_fake(old)
    (gpu,) = nvml.probe().devices
    assert gpu.cuda_cores is None and gpu.sm_count is None and gpu.bandwidth_gbs is None
    assert gpu.sm_clock_rated_boost_mhz is None and gpu.mig_enabled is None
    assert gpu.memory.total_bytes == FakeDevice().total and gpu.memory.reserved_bytes is None


def test_v2_memory_info_missing_falls_back_to_v1(install_fake):
    device = FakeDevice(fail={"nvmlDeviceGetMemoryInfo_v2": FUNCTION_NOT_FOUND})
    install_fake(make_fake_pynvml([device]))
    (gpu,) = nvml.probe().devices
    assert gpu.memory == nvml.MemoryReading(device.total, device.free, device.used, None)


def test_memory_info_failing_entirely_gives_none(install_fake):
    install_fake(make_fake_pynvml([FakeDevice(fail={"nvmlDeviceGetMemoryInfo": NOT_SUPPORTED})]))
    (gpu,) = nvml.probe().devices
    assert gpu.memory is None
    assert nvml.refresh_memory(0) is None


def test_mig_instances_report_their_own_memory_and_sms(install_fake):
    gib = 2**30
    migs = [FakeMig("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864 * 2**20, 4 * gib, 14),
            FakeMig("NVIDIA A100-SXM4-40GB MIG 3g.20gb", 19968 * 2**20, 19 * gib, 42)]
    device = FakeDevice(name="NVIDIA A100-SXM4-40GB", total=40 * gib, cc=(8, 0), cores=6912, mig=migs)
    install_fake(make_fake_pynvml([device]))
    (gpu,) = nvml.probe().devices
    assert gpu.mig_enabled is True
    assert [m.name for m in gpu.mig_instances] == [m.name for m in migs]
    assert [m.memory.total_bytes for m in gpu.mig_instances] == [m.total for m in migs]
    assert [m.memory.free_bytes for m in gpu.mig_instances] == [m.free for m in migs]
    assert [m.sm_count for m in gpu.mig_instances] == [14, 42]


def test_mig_supported_but_disabled(install_fake):
    install_fake(make_fake_pynvml([FakeDevice(name="NVIDIA H100 80GB HBM3", cc=(9, 0), cores=16896, mig=[])]))
    (gpu,) = nvml.probe().devices
    assert gpu.mig_enabled is False and gpu.mig_instances == ()


def test_refresh_memory_is_live(install_fake):
    device = FakeDevice()
    install_fake(make_fake_pynvml([device]))
    assert nvml.refresh_memory(0).free_bytes == device.free
    device.free -= 2**30  # another process allocated 1 GiB
    assert nvml.refresh_memory(0).free_bytes == device.free
    assert nvml.refresh_memory(5) is None


def test_init_is_lazy_once_and_shutdown_runs(install_fake):
    fake = install_fake(make_fake_pynvml([FakeDevice()]))
    assert fake.calls == []  # nothing happens before the first probe
    nvml.probe()
    nvml.probe()
    nvml.refresh_memory(0)
    assert fake.calls.count("nvmlInit") == 1
    nvml._shutdown()  # what atexit runs
    assert fake.calls.count("nvmlShutdown") == 1
    nvml.probe()
    assert fake.calls.count("nvmlInit") == 2


def test_count_failing_reports_an_error(install_fake):
    fake = make_fake_pynvml([FakeDevice()])

    def broken_count():
        raise real_pynvml.NVMLError(real_pynvml.NVML_ERROR_UNKNOWN)
    fake.nvmlDeviceGetCount = broken_count
    install_fake(fake)
    result = nvml.probe()
    assert result.devices == () and "count" in result.error


def test_no_gpu_at_all(install_fake):
    install_fake(make_fake_pynvml([]))
    result = nvml.probe()
    assert result.devices == () and result.error == "NVML found no GPU"
