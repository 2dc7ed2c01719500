"""Fit verdict, headroom and dominant category; plan() and compare() on fake traces; the resolution
solver on a real (tiny) conv net traced by the engine."""
import pytest
import torch

from torchbudget.engine.api import analyze
from torchbudget.engine.cache import TraceCache
from torchbudget.engine.planner import compare
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.planner import Verdict, plan, plan_result, verdict_for
from torchbudget.engine.results import MemoryCategory as C
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.solver import max_resolution
from torchbudget.engine.workload import Workload
from tests.planner_fakes import CountingAnalyzer, fake_training_trace, fake_workload, small_gpu

NONE = Overheads.none()


@pytest.mark.parametrize("required,capacity,expected", [
    (100, 100, Verdict.TIGHT), (101, 100, Verdict.DOES_NOT_FIT), (90, 100, Verdict.FITS),
    (91, 100, Verdict.TIGHT), (0, 100, Verdict.FITS)])
def test_verdict_thresholds(required, capacity, expected):
    assert verdict_for(required, capacity, Overheads(tight_threshold_fraction=0.10)) is expected


def test_plan_result_headroom_and_dominant_category():
    trace = fake_training_trace(64)
    required = simulate_memory(trace, NONE).required_bytes
    roomy = plan_result(trace, small_gpu(2 * required), overheads=NONE)
    assert roomy.verdict is Verdict.FITS and roomy.fits
    assert roomy.headroom_bytes == required
    assert roomy.headroom_fraction == pytest.approx(0.5)
    assert roomy.dominant_category is C.INPUTS  # 64 x 12 KiB inputs beat 4 x 3 KB activations per sample
    short = plan_result(trace, small_gpu(required - 1), overheads=NONE)
    assert short.verdict is Verdict.DOES_NOT_FIT and not short.fits and short.headroom_bytes == -1


def test_plan_solves_max_batch_and_reports_latency():
    analyzer = CountingAnalyzer()
    gpu = small_gpu(5_000_000)
    p = plan(fake_workload(8), gpu, cache=TraceCache(analyzer=analyzer), overheads=NONE)
    assert p.max_batch is not None
    assert simulate_memory(fake_training_trace(p.max_batch), NONE).required_bytes <= gpu.available_memory_bytes
    assert simulate_memory(fake_training_trace(p.max_batch + 1), NONE).required_bytes > gpu.available_memory_bytes
    assert p.latency.lower_bound_ms > 0 and p.throughput_samples_per_s == p.latency.throughput_samples_per_s


def test_compare_traces_once_and_orders_gpus_as_given():
    analyzer = CountingAnalyzer()
    gpus = [small_gpu(10**5, "tiny"), small_gpu(10**8, "big")]
    result = compare(fake_workload(4), gpus, cache=TraceCache(analyzer=analyzer), solve_max_batch=False,
                     overheads=NONE)
    assert [r.gpu_name for r in result.rows] == ["tiny", "big"]
    assert [r.fits for r in result.rows] == [False, True]
    assert result.fastest().gpu_name == "big"
    assert analyzer.calls == 1


class TinyConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_max_resolution_fits_and_the_next_step_does_not():
    model = TinyConvNet()
    options = TraceOptions(mode="infer")
    workload = Workload("tiny", (InputSpec((2, 3, 32, 32)),), options)
    cache = TraceCache(analyzer=lambda w: analyze(model, w.inputs, mode="infer"))

    def required(side):
        return simulate_memory(analyze(model, ((2, 3, side, side),)), NONE).required_bytes

    capacity = required(200)  # between multiples of 32: the answer is 192
    best = max_resolution(workload, small_gpu(capacity), cache=cache, step=32, overheads=NONE)
    assert best == 192
    assert required(best) <= capacity < required(best + 32)
    tokens = Workload("tiny", (InputSpec((2, 16), "int64"),), options)
    assert max_resolution(tokens, small_gpu(capacity), cache=TraceCache(analyzer=CountingAnalyzer())) is None


def test_plan_still_plans_the_given_batch_when_other_batches_cannot_be_traced():
    from torchbudget.engine.errors import ShapeMismatchError

    def only_batch_8(workload):
        if workload.batch_size != 8:
            raise ShapeMismatchError(f"view of a batch-8 tensor at batch {workload.batch_size}")
        return fake_training_trace(8)

    p = plan(fake_workload(8), small_gpu(10**8), cache=TraceCache(analyzer=only_batch_8), overheads=NONE)
    assert p.max_batch is None and p.fits
    assert "largest batch not solved" in p.notes[0] and "batch 9" in p.notes[0]
