"""The GPU validation battery's plumbing, as a dry run on the CPU (no GPU in CI): every case plans, runs
for real on tiny shapes and gives its rows; the largest-batch bisection finds a known answer; the table
goes between the markers of docs/validation.md and nowhere else."""
from __future__ import annotations

from pathlib import Path

import pytest

from torchbudget.bench import validation_battery as battery


def test_the_dry_run_plans_and_runs_its_cases():
    # the two decoders: quick on a CPU, and between them the largest-batch search and the frozen-base case
    rows, table = battery.run(["--dry-run", "--cases", "gpt2,llama3"], log=lambda *_: None)
    cases = {r.case for r in rows}
    assert cases == {"gpt2-124M train", "llama3-8B-shaped LoRA r16 bf16 train"}
    timed = [r for r in rows if r.unit == "ms"]
    assert timed and all(r.measured > 0 and r.predicted > 0 for r in timed)
    assert all(r.measured is None for r in rows if r.unit == "bytes")    # no CUDA counters on the CPU
    largest = [r for r in rows if r.unit == "batch"]
    assert len(largest) == 1 and largest[0].measured == largest[0].predicted > 0
    assert table.count("\n| ") == len(rows) + 1


@pytest.mark.parametrize("answer", [0, 1, 5, 37, 1000])
def test_the_real_largest_batch_is_bisected_from_the_prediction(answer):
    probes = []

    def runs(batch):
        probes.append(batch)
        return batch <= answer

    for guess in (1, answer or 1, 3 * answer + 1):
        probes.clear()
        assert battery.largest_running_batch(runs, guess) == answer
    probes.clear()
    battery.largest_running_batch(runs, max(answer, 1))
    assert len(probes) <= 3 or answer == 0   # a right prediction costs a few probes


def test_the_table_goes_between_the_markers(tmp_path):
    doc = tmp_path / "validation.md"
    doc.write_text(f"# Title\nprose\n{battery.BEGIN}\nold\n{battery.END}\nmore prose\n", encoding="utf-8")
    battery.write_into(doc, "| new |")
    assert doc.read_text(encoding="utf-8") == f"# Title\nprose\n{battery.BEGIN}\n| new |\n{battery.END}\nmore prose\n"
    real = Path(battery.ROOT, "docs", "validation.md").read_text(encoding="utf-8")
    assert battery.BEGIN in real and battery.END in real
