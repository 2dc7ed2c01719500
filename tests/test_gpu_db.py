"""The built-in GPU database: coverage, units, dense figures, the GeForce half-rate rule, uniqueness,
derived peaks vs datasheet peaks, and the schema check on bad files."""
from __future__ import annotations

import re
import tomllib

import pytest

from torchbudget.hardware.errors import SpecFileError
from torchbudget.hardware import catalog
from torchbudget.hardware.derive import FLOPS_PER_CLOCK_PER_SM, derive_peak_tflops
from torchbudget.hardware.names import name_key
from torchbudget.hardware.spec_file import DRIVER_RESERVE_BYTES, load_entries
from tests.hardware_fakes import isolated_config  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_config")

RAW = tomllib.loads(catalog.builtin_file_path().read_text())["gpu"]
REQUIRED = ["B200", "H200 SXM", "H100 SXM", "H100 PCIe", "A100 SXM 80GB", "A100 SXM 40GB", "A100 PCIe 80GB",
            "A100 PCIe 40GB", "L40S", "L4", "A10", "A10G", "T4", "V100 SXM2 32GB", "RTX 6000 Ada", "RTX A6000",
            "RTX 5090", "RTX 5080", "RTX 4090", "RTX 4080", "RTX 4070 Ti", "RTX 4070", "RTX 4060", "RTX 3090",
            "RTX 3080", "RTX 3070", "RTX 3060 12GB", "RTX 2080 Ti", "GTX 1080 Ti", "Jetson AGX Orin 64GB",
            "MI300X", "MI250X", "M2 Max 38-core"]


def by_name(name):
    return next(s for s in catalog.database() if s.name == name)


def test_at_least_35_gpus_and_every_required_one():
    names = [s.name for s in catalog.database()]
    assert len(names) >= 35
    assert set(REQUIRED) <= set(names)
    assert {s.vendor for s in catalog.database()} == {"NVIDIA", "AMD", "Apple"}
    assert all(s.origin == "database" for s in catalog.database())


def test_units_and_ranges():
    for spec in catalog.database():
        assert 4 * 2**30 <= spec.memory_bytes <= 512 * 2**30, spec.name  # MI355X: 288 GiB
        assert spec.available_memory_bytes < spec.memory_bytes, spec.name
        assert 100 <= spec.bandwidth_gbs <= 10_000, spec.name
        assert 1 <= spec.peak_tflops["fp32"] <= 200, spec.name
        assert spec.source, spec.name
    # memory is GiB: "80 GB" HBM is 80 * 2**30 bytes; what-if available = total - the driver reserve
    h100 = by_name("H100 SXM")
    assert h100.memory_bytes == 80 * 2**30
    assert h100.available_memory_bytes == 80 * 2**30 - DRIVER_RESERVE_BYTES
    assert by_name("RTX 4090").memory_bytes == 24 * 2**30
    assert h100.bandwidth_bytes_per_s == 3350e9


def test_what_if_usable_memory_agrees_with_measured_idle_gpus():
    # nvidia-smi -q on idle H100 80GB HBM3 machines (public logs): free 81007..81227 MiB; the workload's
    # CUDA context (512 MiB) then comes out of that. The what-if figure must land in the same range.
    available_mib = by_name("H100 SXM").available_memory_bytes / 2**20   # NVML free on idle H100s
    assert 81007 <= available_mib <= 81227
    assert DRIVER_RESERVE_BYTES == 768 * 2**20


def test_capacity_in_the_name_matches_memory():
    for spec in catalog.database():
        match = re.search(r"(\d+)GB", spec.name)
        if match:
            assert spec.memory_bytes == int(match.group(1)) * 2**30, spec.name


def test_dense_not_sparse_figures():
    h100 = by_name("H100 SXM")
    assert h100.peak_tflops["bf16"] < 1000  # 989.4 dense; the datasheet's 1979 is 2:4 sparse
    assert h100.peak_tflops["fp8"] < 2000
    assert by_name("A100 SXM 80GB").peak_tflops["bf16"] == 312  # not 624
    assert by_name("L40S").peak_tflops["fp8"] < 1000  # 733, not 1466
    assert by_name("B200").peak_tflops["bf16"] < 2500  # 2250, not 4500
    for spec in catalog.database():
        p = spec.peak_tflops
        if p["tf32"] and p["bf16"]:
            assert p["bf16"] == pytest.approx(2 * p["tf32"], rel=0.02), spec.name  # tf32 is half of bf16
        if p["fp8"] and p["bf16"] and spec.compute_capability != "12.0":  # RTX 50: FP8 not halved
            assert p["fp8"] == pytest.approx(2 * p["bf16"], rel=0.02), spec.name


def test_tensor_rates_at_least_the_non_tensor_rate():
    for spec in catalog.database():
        for dtype in ("tf32", "fp16", "bf16", "fp8"):
            if spec.peak_tflops[dtype] is not None:
                assert spec.peak_tflops[dtype] >= spec.peak_tflops["fp32"], (spec.name, dtype)


def test_geforce_stores_the_fp32_accumulate_rate_pytorch_runs():
    geforce_with_tensor_cores = [e for e in RAW if e.get("segment") == "geforce" and "fp16_tflops" in e]
    assert len(geforce_with_tensor_cores) >= 12
    for entry in geforce_with_tensor_cores:
        assert entry.get("half_rate_fp32_accumulate") is True, entry["name"]
        # PyTorch's fp16 matmul accumulates in fp32: half of the fp16-accumulate headline
        assert entry["fp16_tflops"] == pytest.approx(entry["fp16_acc16_tflops"] / 2, abs=0.11), entry["name"]
        if "bf16_tflops" in entry:  # Ampere and later; Turing has no bf16
            assert entry["bf16_tflops"] == entry["fp16_tflops"], entry["name"]
    assert by_name("RTX 4090").peak_tflops["fp16"] == pytest.approx(165.2)
    assert by_name("RTX 4090").peak_flops_per_s("float16", tensor_core=True) == pytest.approx(165.2e12)
    # data-centre Ada runs FP32 accumulate at full rate: L40S 362 dense from 142 SMs at 2520 MHz
    assert by_name("L40S").peak_tflops["bf16"] == pytest.approx(142 * 2520e6 * 1024 / 1e12, rel=0.02)


def test_no_duplicate_names_aliases_or_nvml_names():
    seen = {}
    for entry in RAW:
        for text in {entry["name"], *entry.get("aliases", []), *entry.get("nvml_names", [])}:
            key = re.sub(r"[^a-z0-9]", "", text.lower())
            for brand in ("nvidia", "geforce", "tesla", "rtx", "gtx", "amd", "instinct", "apple"):
                key = key.replace(brand, "")
            assert seen.setdefault(key, entry["name"]) == entry["name"], f"{text!r} in {entry['name']} and {seen[key]}"


def test_derived_peaks_within_10_percent_of_the_datasheet():
    checked = 0
    for spec in catalog.database():
        if spec.compute_capability not in FLOPS_PER_CLOCK_PER_SM or not spec.sm_count:
            continue
        entry = next(e for e in RAW if e["name"] == spec.name)
        derived = derive_peak_tflops(spec.compute_capability, spec.sm_count, spec.boost_clock_mhz,
                                     half_rate_fp32_accumulate=entry.get("half_rate_fp32_accumulate", False))
        assert derived["fp32"] == pytest.approx(spec.peak_tflops["fp32"], rel=0.10), spec.name
        for tensor in ("bf16" if spec.peak_tflops["bf16"] else "fp16", "fp8"):
            if spec.peak_tflops[tensor]:
                assert derived[tensor] == pytest.approx(spec.peak_tflops[tensor], rel=0.10), (spec.name, tensor)
        checked += 1
    assert checked >= 36


def test_derivation_closed_form():
    # H100 SXM: 132 SMs x 1980 MHz x 256 FP32 FLOPs/clk/SM = 66.9 TFLOPS
    assert derive_peak_tflops("9.0", 132, 1980)["fp32"] == pytest.approx(132 * 1980e6 * 256 / 1e12, abs=0.01)
    half = derive_peak_tflops("8.9", 128, 2520, half_rate_fp32_accumulate=True)
    full = derive_peak_tflops("8.9", 128, 2520)
    assert half["bf16"] == pytest.approx(full["bf16"] / 2, abs=0.01)
    assert half["int8"] == full["int8"]  # integer accumulate is not halved
    assert derive_peak_tflops("7.0", 80, 1530)["bf16"] is None  # Volta: no bf16
    assert all(v is None for v in derive_peak_tflops("99.9", 10, 1000).values())


def test_peak_flops_per_s_uses_tf32_only_when_allowed():
    a100 = by_name("A100 SXM 80GB")
    assert a100.peak_flops_per_s("float32", tensor_core=True) == pytest.approx(19.5e12)
    assert a100.peak_flops_per_s("float32", tensor_core=True, tf32=True) == pytest.approx(156e12)
    assert a100.peak_flops_per_s("bfloat16", tensor_core=True) == pytest.approx(312e12)


GOOD = """
[[gpu]]
name = "Test GPU"
vendor = "NVIDIA"
memory_gib = 16
bandwidth_gbs = 500
fp32_tflops = 10.0
bf16_tflops = 40.0
source = "test"
"""


@pytest.mark.parametrize("edit, field, words", [
    (('fp32_tflops = 10.0', 'fp32_tflops = -1.0'), "fp32_tflops", "positive"),
    (('fp32_tflops = 10.0', 'fp32_tflops = "fast"'), "fp32_tflops", "positive"),
    (('bf16_tflops = 40.0', 'bf16_tflops = 4.0'), "bf16_tflops", "below the non-tensor"),
    (('memory_gib = 16', 'memory_gib = 17179869184'), "memory_gib", "unit is GiB"),
    (('bandwidth_gbs = 500', 'bandwidth_gbs = 5e11'), "bandwidth_gbs", "unit is GB/s"),
    (('memory_gib = 16', 'memory_gb = 16'), "memory_gb", "unknown key"),
    (('vendor = "NVIDIA"', 'vendor = "Nvidia Corp"'), "vendor", "one of"),
    (('source = "test"', ''), "source", "missing"),
    (('memory_gib = 16', 'memory_gib = 16\nsm_count = 1.5'), "sm_count", "positive integer"),
    (('memory_gib = 16', 'memory_gib = 16\naliases = "T"'), "aliases", "list"),
])
def test_bad_entry_names_file_entry_and_field(tmp_path, edit, field, words):
    path = tmp_path / "gpus.toml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(SpecFileError) as info:
        load_entries(path, require_source=True)
    message = str(info.value)
    assert str(path) in message and "'Test GPU'" in message and f"'{field}'" in message and words in message


def test_duplicate_alias_across_entries_is_rejected(tmp_path):
    path = tmp_path / "gpus.toml"
    second = GOOD.replace('"Test GPU"', '"Other GPU"').replace('source = "test"', 'aliases = ["test-gpu"]\nsource = "x"')
    path.write_text(GOOD + second)
    with pytest.raises(SpecFileError, match=r"entry 2 \('Other GPU'\), field 'aliases'.*already used by entry 1"):
        load_entries(path)


def test_malformed_toml_and_missing_file(tmp_path):
    path = tmp_path / "gpus.toml"
    path.write_text("[[gpu]\nname = ")
    with pytest.raises(SpecFileError, match="not valid TOML"):
        load_entries(path)
    with pytest.raises(SpecFileError, match="cannot be read"):
        load_entries(tmp_path / "absent.toml")


def test_name_keys_ignore_brand_case_and_punctuation():
    assert name_key("NVIDIA GeForce RTX 4090") == name_key("rtx-4090") == name_key("4090")
    assert name_key("H100-SXM") == name_key("h100 sxm") == name_key("H100SXM")
    assert name_key("A100 80GB") == name_key("a100 80 gb")
