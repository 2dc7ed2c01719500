"""plan / sweep / compare / validate from the command line, on a tiny model file (fast traces)."""
import json

import pytest
import torch

from torchbudget.cli import run_cli as _run_cli
from torchbudget.engine.api import analyze
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.results import MemoryCategory
from torchbudget.hardware.catalog import resolve_gpu

MODEL_SOURCE = '''
import torch
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 4)
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
'''


def run_cli(argv: list[str]) -> int:
    # the model file runs in this process: these cases test planning, and an isolated child costs ~3.5 s of
    # CPU each (the isolation has its own cases in tests/test_hostile_cli.py)
    return _run_cli(argv + ["--no-isolation"])


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(MODEL_SOURCE)
    return f"{path}:Tiny"


def run_json(capsys, argv):
    assert run_cli(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_json_has_the_documented_fields_and_matches_the_engine(capsys, model_file):
    out = run_json(capsys, ["plan", model_file, "--input", "4x3x32x32", "--gpu", "T4", "--mode", "train",
                            "--optimizer", "adam"])
    for key in ("memory", "fits", "max_batch", "latency", "throughput", "verdict"):
        assert key in out
    memory = out["memory"]
    assert set(memory["by_category"]) == {c.value for c in MemoryCategory}
    assert memory["peak_bytes"] == sum(memory["by_category"].values())
    result = analyze(model_file, "4x3x32x32", mode="train", optimizer="adam")
    assert memory["peak_bytes"] == simulate_memory(result).peak_bytes
    assert out["fits"] is True and out["max_batch"] > 4
    assert 0 < out["latency"]["lower_bound_ms"] <= out["latency"]["estimate_ms"]
    assert out["throughput"]["samples_per_s"] == pytest.approx(4 / (out["latency"]["estimate_ms"] / 1e3))
    assert out["gpu"]["available_memory_bytes"] == resolve_gpu("T4").available_memory_bytes


def test_plan_human_output_has_verdict_breakdown_and_latency(capsys, model_file):
    assert run_cli(["plan", model_file, "--input", "2x3x32x32", "--gpu", "T4", "--no-max-batch"]) == 0
    text = capsys.readouterr().out
    assert "FITS" in text and "cuda_context" in text and "MiB" in text
    assert "max batch: not solved" in text
    assert "lower bound" in text and "samples/s" in text


def test_sweep_json_points_per_batch_and_gpu(capsys, model_file):
    out = run_json(capsys, ["sweep", model_file, "--input", "1x3x32x32", "--batch", "1,2,8,4",
                            "--gpus", "T4,H100 SXM"])
    assert [p["value"] for p in out["points"]] == [1, 2, 4, 8]
    assert [g["gpu_name"] for g in out["gpus"]] == ["T4", "H100 SXM"]
    peaks = [p["per_gpu"][0]["tensor_peak_bytes"] for p in out["points"]]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
    assert [g["target"] for g in out["gpus"]] == ["sm75", "sm90"]
    h100 = [p["per_gpu"][1]["lower_bound_ms"] for p in out["points"]]
    t4 = [p["per_gpu"][0]["lower_bound_ms"] for p in out["points"]]
    assert all(a < b for a, b in zip(h100, t4))


def test_compare_rows_follow_the_gpu_list(capsys, model_file):
    out = run_json(capsys, ["compare", model_file, "--input", "2x3x32x32", "--gpus", "H100 SXM,T4",
                            "--no-max-batch"])
    assert [r["gpu"] for r in out["rows"]] == ["H100 SXM", "T4"]
    assert out["rows"][0]["required_bytes"] == out["rows"][1]["required_bytes"]
    assert out["rows"][0]["lower_bound_ms"] < out["rows"][1]["lower_bound_ms"]
    assert [r["max_batch"] for r in out["rows"]] == [None, None]


def test_compare_solves_the_same_max_batch_as_plan(capsys, model_file):
    compared = run_json(capsys, ["compare", model_file, "--input", "2x3x32x32", "--gpus", "T4"])
    planned = run_json(capsys, ["plan", model_file, "--input", "2x3x32x32", "--gpu", "T4"])
    assert compared["rows"][0]["max_batch"] == planned["max_batch"] is not None

