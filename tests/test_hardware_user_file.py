"""The user hardware file: location, add/override/remove through the API, validation before writing."""
from __future__ import annotations

import dataclasses
import os
import tomllib

import pytest

from torchbudget.hardware.errors import SpecFileError
from torchbudget.hardware import catalog
from torchbudget.hardware.spec import GpuSpec
from torchbudget.hardware.user_file import remove_user_gpu, save_user_gpu, user_file_path
from tests.hardware_fakes import isolated_config  # noqa: F401

GIB = 2**30


def lab_card(**changes) -> GpuSpec:
    spec = GpuSpec(name='Lab "Card" Ü1', vendor="NVIDIA", memory_bytes=20 * GIB, available_memory_bytes=19 * GIB,
                   bandwidth_gbs=700.5, peak_tflops={"fp32": 20.0, "bf16": 80.0, "fp8": None},
                   memory_type="GDDR6", architecture="Ada Lovelace", compute_capability="8.9", sm_count=40,
                   boost_clock_mhz=2400, tdp_w=250, nvml_names=("NVIDIA Lab Card U1",), aliases=("labcard",),
                   source="our lab's measurements")
    return dataclasses.replace(spec, **changes)


def test_path_follows_the_env_override_then_platformdirs(isolated_config, monkeypatch, tmp_path):
    assert user_file_path() == isolated_config / "gpus.toml"
    monkeypatch.delenv("TORCHBUDGET_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_file_path() == tmp_path / "xdg" / "torchbudget" / "gpus.toml"


def test_saved_gpu_joins_the_database_with_every_field(isolated_config):
    before = len(catalog.database())
    save_user_gpu(lab_card())
    database = catalog.database()
    assert len(database) == before + 1
    saved = next(s for s in database if s.name == lab_card().name)
    expected = dataclasses.replace(lab_card(), origin="user",
                                   peak_tflops={**lab_card().peak_tflops, "tf32": None, "fp16": None, "int8": None})
    assert saved == expected
    assert catalog.resolve_gpu("labcard") == saved
    assert tomllib.loads(user_file_path().read_text(encoding="utf-8"))["gpu"][0]["memory_gib"] == 20.0


def test_default_usable_memory_is_not_written(isolated_config):
    from torchbudget.hardware.spec_file import DRIVER_RESERVE_BYTES

    save_user_gpu(lab_card(available_memory_bytes=20 * GIB - DRIVER_RESERVE_BYTES))
    assert "available_memory_gib" not in user_file_path().read_text(encoding="utf-8")
    assert catalog.resolve_gpu("labcard").available_memory_bytes == 20 * GIB - DRIVER_RESERVE_BYTES


def test_user_entry_overrides_a_builtin_by_name_and_removal_restores_it(isolated_config):
    builtin = catalog.resolve_gpu("RTX 4090")
    save_user_gpu(dataclasses.replace(builtin, memory_bytes=48 * GIB, available_memory_bytes=47 * GIB))
    matches = [s for s in catalog.database() if s.name == "RTX 4090"]
    assert len(matches) == 1 and matches[0].origin == "user" and matches[0].memory_bytes == 48 * GIB
    assert catalog.resolve_gpu("4090").memory_bytes == 48 * GIB
    remove_user_gpu("rtx-4090")
    assert catalog.resolve_gpu("4090") == builtin


def test_saving_twice_replaces_not_duplicates(isolated_config):
    save_user_gpu(lab_card())
    save_user_gpu(lab_card(bandwidth_gbs=900.0))
    assert [s.bandwidth_gbs for s in catalog.database() if s.origin == "user"] == [900.0]


def test_removing_an_unknown_user_gpu_is_an_error(isolated_config):
    with pytest.raises(SpecFileError, match="no user GPU named 'Nope'"):
        remove_user_gpu("Nope")


@pytest.mark.parametrize("bad, words", [
    (dict(aliases=("H100 SXM",)), "already used by"),  # would steal a built-in GPU's name
    (dict(bandwidth_gbs=-5.0), "bandwidth_gbs"),
    (dict(peak_tflops={"fp32": 20.0, "bf16": 5.0}), "below the non-tensor"),
    (dict(vendor="Nvidia Corp"), "vendor"),
])
def test_invalid_gpu_is_refused_and_nothing_is_written(isolated_config, bad, words):
    save_user_gpu(lab_card(name="Keep Me", aliases=(), nvml_names=()))
    text_before = user_file_path().read_text(encoding="utf-8")
    with pytest.raises(SpecFileError, match=words):
        save_user_gpu(lab_card(**bad))
    assert user_file_path().read_text(encoding="utf-8") == text_before


def test_a_broken_user_file_names_itself(isolated_config):
    path = user_file_path()
    path.parent.mkdir(parents=True)
    path.write_text('[[gpu]]\nname = "Mine"\nvendor = "NVIDIA"\nmemory_gib = 8\nbandwidth_gbs = 300\n'
                    'fp32_tflops = 10\nfp16_tflop = 40\n')
    catalog.reload()
    with pytest.raises(SpecFileError) as info:
        catalog.database()
    assert str(path) in str(info.value) and "'Mine'" in str(info.value) and "'fp16_tflop'" in str(info.value)


def test_the_cache_follows_the_user_file(isolated_config, monkeypatch, tmp_path):
    save_user_gpu(lab_card())
    assert any(s.origin == "user" for s in catalog.database())
    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(tmp_path / "elsewhere"))  # another user's config
    assert not any(s.origin == "user" for s in catalog.database())
    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(isolated_config))
    text = user_file_path().read_text(encoding="utf-8").replace("700.5", "650.0")
    user_file_path().write_text(text, encoding="utf-8")  # edited by hand, no reload() call
    os.utime(user_file_path(), ns=(1, 1))  # a distinct mtime even on coarse-clock file systems
    assert catalog.resolve_gpu("labcard").bandwidth_gbs == 650.0
