"""Detected devices -> GpuSpecs (matching real NVML names, derived peaks, MIG), resolve_gpu, default_gpu."""
from __future__ import annotations

import pynvml as real_pynvml
import pytest

from torchbudget.hardware.errors import UnknownGpuError
from torchbudget.hardware import catalog
from torchbudget.hardware.local import match_device
from tests.hardware_fakes import FakeDevice, FakeMig, install_fake, isolated_config, make_fake_pynvml  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_config")

# (name as NVML reports it, database entry)
REAL_NVML_NAMES = [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA B200", "B200"),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"),
    ("A100-SXM4-40GB", "A100 SXM 40GB"),  # drivers before R470 had no "NVIDIA " prefix
    ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L40", "L40"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA A10G", "A10G"),
    ("Tesla T4", "T4"),
    ("Tesla V100-SXM2-32GB", "V100 SXM2 32GB"),
    ("Tesla V100-SXM2-16GB", "V100 SXM2 16GB"),
    ("Tesla V100-PCIE-32GB", "V100 PCIe 32GB"),
    ("Tesla V100-PCIE-16GB", "V100 PCIe 16GB"),
    ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
    ("NVIDIA RTX A6000", "RTX A6000"),
    ("NVIDIA GeForce RTX 5090", "RTX 5090"),
    ("NVIDIA GeForce RTX 5080", "RTX 5080"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA GeForce RTX 4080", "RTX 4080"),
    ("NVIDIA GeForce RTX 4070 Ti", "RTX 4070 Ti"),
    ("NVIDIA GeForce RTX 4070", "RTX 4070"),
    ("NVIDIA GeForce RTX 4060", "RTX 4060"),
    ("NVIDIA GeForce RTX 3090", "RTX 3090"),
    ("NVIDIA GeForce RTX 3080", "RTX 3080"),
    ("NVIDIA GeForce RTX 3070", "RTX 3070"),
    ("NVIDIA GeForce RTX 3060", "RTX 3060 12GB"),
    ("NVIDIA GeForce RTX 2080 Ti", "RTX 2080 Ti"),
    ("GeForce GTX 1080 Ti", "GTX 1080 Ti"),
    ("NVIDIA GeForce GTX 1080 Ti", "GTX 1080 Ti"),
]
# similar names that are different GPUs and must not borrow an entry's peaks
NOT_IN_DATABASE = ["NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 4070 Ti SUPER", "NVIDIA H100 NVL",
                   "NVIDIA GeForce RTX 3060 Ti", "NVIDIA A40", "Quadro RTX 8000", "NVIDIA GeForce RTX 4090 D"]


@pytest.mark.parametrize("nvml_name, entry", REAL_NVML_NAMES)
def test_real_nvml_names_match_their_entry(nvml_name, entry):
    assert match_device(nvml_name, catalog.database()).name == entry


@pytest.mark.parametrize("nvml_name", NOT_IN_DATABASE)
def test_near_miss_names_do_not_match(nvml_name):
    assert match_device(nvml_name, catalog.database()) is None


def test_matched_device_is_live_with_nvml_memory_and_entry_peaks(install_fake):
    device = FakeDevice()
    install_fake(make_fake_pynvml([device]))
    (spec,) = catalog.local_gpus()
    entry = catalog.resolve_gpu("RTX 4090")
    assert (spec.name, spec.origin, spec.local_index) == ("RTX 4090", "live", 0)
    assert spec.memory_bytes == device.total
    assert spec.available_memory_bytes == device.free  # NVML free: the planner takes the CUDA context out
    assert dict(spec.peak_tflops) == dict(entry.peak_tflops)  # rated clock, not NVML's 3105 MHz max
    assert spec.bandwidth_gbs == entry.bandwidth_gbs


def test_unknown_geforce_is_derived_from_sms_and_rated_clock(install_fake):
    device = FakeDevice(name="NVIDIA GeForce RTX 4090 D", cores=14592, rated_boost=2520, sm_clock_max=3105)
    install_fake(make_fake_pynvml([device]))
    (spec,) = catalog.local_gpus()
    sms = 14592 // 128
    assert (spec.name, spec.origin, spec.sm_count, spec.architecture) == (device.name, "derived", sms, "Ada Lovelace")
    assert spec.peak_tflops["fp32"] == pytest.approx(sms * 2520e6 * 256 / 1e12, abs=0.01)
    assert spec.peak_tflops["bf16"] == pytest.approx(sms * 2520e6 * 1024 / 2 / 1e12, abs=0.01)  # GeForce half rate
    assert spec.peak_tflops["int8"] == pytest.approx(sms * 2520e6 * 2048 / 1e12, abs=0.01)
    assert spec.bandwidth_gbs == pytest.approx(384 * 10501e6 * 2 / 8 / 1e9, abs=0.1)
    assert spec.memory_bytes == device.total


def test_derived_falls_back_to_max_clock_and_full_rate_for_data_centre(install_fake):
    device = FakeDevice(name="NVIDIA H100 NVL", cores=16896, cc=(9, 0), sm_clock_max=1785,
                        fail={"nvmlDeviceGetClock": real_pynvml.NVML_ERROR_NOT_SUPPORTED})
    install_fake(make_fake_pynvml([device]))
    (spec,) = catalog.local_gpus()
    assert spec.origin == "derived" and spec.boost_clock_mhz == 1785
    assert spec.peak_tflops["bf16"] == pytest.approx(132 * 1785e6 * 4096 / 1e12, abs=0.01)


def test_unknown_device_without_core_count_has_no_peaks(install_fake):
    device = FakeDevice(name="NVIDIA Mystery", fail={"nvmlDeviceGetNumGpuCores": real_pynvml.NVML_ERROR_NOT_SUPPORTED})
    install_fake(make_fake_pynvml([device]))
    (spec,) = catalog.local_gpus()
    assert spec.origin == "derived" and all(v is None for v in spec.peak_tflops.values())
    assert spec.peak_flops_per_s("float32", tensor_core=False) == 0.0


def test_mig_instances_become_their_parent_scaled(install_fake):
    gib = 2**30
    migs = [FakeMig("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 5 * gib, 4 * gib, 14),
            FakeMig("NVIDIA A100-SXM4-40GB MIG 3g.20gb", 20 * gib, 19 * gib, 42)]
    install_fake(make_fake_pynvml([FakeDevice(name="NVIDIA A100-SXM4-40GB", total=40 * gib, cc=(8, 0),
                                              cores=6912, mig=migs)]))
    specs = catalog.local_gpus()
    assert [s.name for s in specs] == ["A100 SXM 40GB MIG 1g.5gb", "A100 SXM 40GB MIG 3g.20gb"]
    small, large = specs
    assert (small.memory_bytes, small.available_memory_bytes) == (5 * gib, 4 * gib)
    assert small.peak_tflops["bf16"] == pytest.approx(312 * 14 / 108)
    assert large.peak_tflops["fp32"] == pytest.approx(19.5 * 42 / 108)
    assert small.bandwidth_gbs == pytest.approx(1555 * 5 / 40)
    assert all(s.origin == "live" and s.local_index == 0 for s in specs)


def test_local_names_resolve(install_fake):
    install_fake(make_fake_pynvml([FakeDevice(), FakeDevice(name="Tesla T4", cc=(7, 5), cores=2560)]))
    assert catalog.resolve_gpu("local").name == "RTX 4090"
    assert catalog.resolve_gpu("local:0").name == "RTX 4090"
    assert catalog.resolve_gpu("LOCAL:1").name == "T4"
    with pytest.raises(UnknownGpuError, match=r"no local GPU 2: found 2 \(local:0 = RTX 4090, local:1 = T4\)"):
        catalog.resolve_gpu("local:2")
    assert catalog.default_gpu().name == "RTX 4090" and catalog.default_gpu().origin == "live"


def test_local_only_names_resolve_to_the_local_spec(install_fake):
    gib = 2**30
    migs = [FakeMig("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 5 * gib, 4 * gib, 14)]
    install_fake(make_fake_pynvml([FakeDevice(name="NVIDIA GeForce RTX 4090 D", cores=14592),
                                   FakeDevice(name="NVIDIA A100-SXM4-40GB", cc=(8, 0), cores=6912, mig=migs)]))
    derived = catalog.resolve_gpu("NVIDIA GeForce RTX 4090 D")
    assert derived.origin == "derived" and derived.local_index == 0
    mig = catalog.resolve_gpu("a100 sxm 40gb mig 1g.5gb")
    assert mig.memory_bytes == 5 * gib and mig.local_index == 1


def test_without_gpu_local_explains_and_default_is_documented(install_fake):
    install_fake(make_fake_pynvml([], init_error=real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert catalog.local_gpus() == ()
    with pytest.raises(UnknownGpuError, match="no local GPU found .NVIDIA driver not loaded"):
        catalog.resolve_gpu("local")
    assert catalog.default_gpu().name == catalog.DEFAULT_GPU_NAME
    assert catalog.default_gpu().origin == "database"


@pytest.mark.parametrize("query, expected", [
    ("H100 SXM", "H100 SXM"), ("h100 sxm", "H100 SXM"), ("H100-SXM", "H100 SXM"), ("H100SXM", "H100 SXM"),
    ("RTX 3060", "RTX 3060 12GB"), ("4090", "RTX 4090"), ("GeForce RTX 4090", "RTX 4090"),
    ("4070", "RTX 4070"), ("4070 ti", "RTX 4070 Ti"), ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("a100 sxm4 80gb", "A100 SXM 80GB"), ("A100 PCIe 40GB", "A100 PCIe 40GB"), ("Tesla T4", "T4"),
    ("mi300x", "MI300X"), ("M2 Max", "M2 Max 38-core"), ("orin", "Jetson AGX Orin 64GB"), ("a6000", "RTX A6000"),
    ("6000 ada", "RTX 6000 Ada"), ("  l40s ", "L40S"),
])
def test_resolve_accepts_unambiguous_spellings(query, expected):
    assert catalog.resolve_gpu(query).name == expected


@pytest.mark.parametrize("query, listed", [
    ("H100", ["H100 SXM", "H100 PCIe"]),
    ("A100", ["A100 SXM 80GB", "A100 SXM 40GB", "A100 PCIe 80GB", "A100 PCIe 40GB"]),
    ("A100 80GB", ["A100 SXM 80GB", "A100 PCIe 80GB"]),
])
def test_ambiguous_names_list_the_candidates(query, listed):
    with pytest.raises(UnknownGpuError, match="ambiguous") as info:
        catalog.resolve_gpu(query)
    assert all(name in str(info.value) for name in listed)
    assert info.value.field == "gpu"


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownGpuError, match=r"unknown GPU 'RTX 4095'. Closest: RTX 4090"):
        catalog.resolve_gpu("RTX 4095")
    with pytest.raises(UnknownGpuError, match="no GPU name given"):
        catalog.resolve_gpu("  ")


def test_every_name_and_alias_resolves_in_any_case_and_punctuation():
    from hypothesis import given, settings, strategies as st

    names = [(n, s.name) for s in catalog.database() for n in (s.name, *s.aliases, *s.nvml_names)]

    @settings(max_examples=100, deadline=None)
    @given(st.sampled_from(names), st.data())
    def check(pair, data):
        text, expected = pair
        separator = data.draw(st.sampled_from([" ", "-", "_", "  "]))
        spelled = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in text.replace(" ", separator))
        assert catalog.resolve_gpu(spelled).name == expected

    check()
