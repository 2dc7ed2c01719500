"""`torchbudget gpus`: with and without a (fake) local GPU, table and JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pynvml as real_pynvml
import pytest

from torchbudget.cli import run_cli
from torchbudget.hardware import catalog
from torchbudget.hardware.spec import PEAK_DTYPES
from tests.hardware_fakes import FakeDevice, install_fake, isolated_config, make_fake_pynvml  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def test_without_gpu_the_table_says_why_and_lists_the_database(install_fake, capsys):
    install_fake(make_fake_pynvml([], init_error=real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert run_cli(["gpus"]) == 0
    out = capsys.readouterr().out
    assert "No local GPU found (NVIDIA driver not loaded)" in out
    for spec in catalog.database():
        assert spec.name in out
    h100_row = next(line for line in out.splitlines() if line.startswith("H100 SXM "))
    assert h100_row.split()[2:8] == ["80", "3,350", "67.0", "494.7", "989.4", "1,978.9"]


def test_json_gives_every_database_gpu_with_bytes_bandwidth_and_peaks(install_fake, capsys):
    install_fake(None)
    assert run_cli(["gpus", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["local"] == [] and "not installed" in document["local_error"]
    assert [g["name"] for g in document["database"]] == [s.name for s in catalog.database()]
    h100 = next(g for g in document["database"] if g["name"] == "H100 SXM")
    assert h100["memory_bytes"] == 80 * 2**30 and h100["bandwidth_gbs"] == 3350
    assert set(h100["peak_tflops"]) == set(PEAK_DTYPES) and h100["peak_tflops"]["bf16"] == 989.4
    assert h100["origin"] == "database" and h100["available_memory_bytes"] < h100["memory_bytes"]
    assert next(g for g in document["database"] if g["name"] == "A100 SXM 80GB")["peak_tflops"]["fp8"] is None


def test_local_json_with_a_fake_gpu(install_fake, capsys):
    device = FakeDevice()
    install_fake(make_fake_pynvml([device]))
    assert run_cli(["gpus", "--local", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert "database" not in document
    (gpu,) = document["local"]
    assert (gpu["name"], gpu["origin"], gpu["local_index"], gpu["memory_bytes"]) == ("RTX 4090", "live", 0, device.total)
    assert document["driver_version"] == "550.54.14" and document["cuda_driver_version"] == "12.4"


def test_local_table_with_a_fake_gpu(install_fake, capsys):
    install_fake(make_fake_pynvml([FakeDevice(), FakeDevice(name="NVIDIA GeForce RTX 4090 D", cores=14592)]))
    assert run_cli(["gpus", "--local"]) == 0
    out = capsys.readouterr().out
    assert "local:0  RTX 4090: available 20.00 GiB of 23.99 GiB total" in out and "matched to the database" in out
    assert "local:1  NVIDIA GeForce RTX 4090 D" in out and "derived" in out
    assert "GPU database" not in out


def test_main_entry_point_in_a_fresh_process(isolated_config):
    env = {**os.environ, "TORCHBUDGET_CONFIG_DIR": str(isolated_config)}
    done = subprocess.run([sys.executable, "main.py", "gpus", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert len(document["database"]) >= 35
    assert document["local"] or document["local_error"]  # this machine may or may not have a GPU
