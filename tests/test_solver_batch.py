"""The max-batch solver against brute force over exact (fake) traces: answer fits, answer + 1 does not."""
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchbudget.engine.cache import TraceCache
from torchbudget.engine.latency import roofline
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.solver import largest_true, max_batch, sweep
from tests.planner_fakes import CountingAnalyzer, fake_training_trace, fake_workload, small_gpu

NONE = Overheads.none()


def peak(batch, **kwargs):
    return simulate_memory(fake_training_trace(batch, **kwargs), NONE).peak_bytes


@pytest.mark.parametrize("lumpy", [False, True])
@pytest.mark.parametrize("capacity", [10**6, 7_654_321, 10**8])
def test_answer_fits_and_answer_plus_one_does_not(capacity, lumpy):
    analyzer = CountingAnalyzer(lumpy=lumpy)
    best = max_batch(fake_workload(), small_gpu(capacity), cache=TraceCache(analyzer=analyzer), overheads=NONE)
    assert best >= 1
    assert peak(best, lumpy=lumpy) <= capacity < peak(best + 1, lumpy=lumpy)
    if not lumpy:  # affine traces: batch 1 and 2, then the answer, which the model reproduced exactly
        assert analyzer.calls <= 3


def test_zero_when_batch_one_does_not_fit():
    assert max_batch(fake_workload(), small_gpu(peak(1) - 1), cache=TraceCache(analyzer=CountingAnalyzer()),
                     overheads=NONE) == 0


def test_limit_caps_the_answer():
    cache = TraceCache(analyzer=CountingAnalyzer())
    assert max_batch(fake_workload(), small_gpu(10**12), cache=cache, overheads=NONE, limit=100) == 100


def test_default_overheads_count_against_capacity():
    overheads = Overheads()
    capacity = 2**30
    best = max_batch(fake_workload(), small_gpu(capacity), cache=TraceCache(analyzer=CountingAnalyzer()))
    assert simulate_memory(fake_training_trace(best), overheads).required_bytes <= capacity
    assert simulate_memory(fake_training_trace(best + 1), overheads).required_bytes > capacity


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 5000), st.integers(1, 6000))
def test_largest_true_matches_a_linear_scan(threshold, limit):
    expected = max((n for n in range(1, limit + 1) if n <= max(threshold, 1)), default=1)
    assert largest_true(lambda n: n <= max(threshold, 1), 1, None, limit) == expected


def test_batch_sweep_interpolates_between_exact_traces_and_agrees_with_them():
    analyzer = CountingAnalyzer()
    gpus = [small_gpu(10**7, "a"), small_gpu(10**8, "b")]
    result = sweep(fake_workload(), gpus, batches=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
                   cache=TraceCache(analyzer=analyzer), overheads=NONE)
    assert [p.value for p in result.points][:3] == [1, 2, 4]
    assert any(p.interpolated for p in result.points)
    for point in result.points:
        exact = fake_training_trace(point.value)
        assert [g.required_bytes for g in point.per_gpu] == [peak(point.value)] * len(gpus)
        assert [g.fits for g in point.per_gpu] == [peak(point.value) <= g.available_memory_bytes for g in gpus]
        for measured, gpu in zip(point.per_gpu, gpus):
            reference = roofline(exact, gpu)
            assert measured.lower_bound_ms == pytest.approx(reference.lower_bound_ms, rel=1e-12)
            assert measured.estimate_ms == pytest.approx(reference.estimate_ms, rel=1e-12)
    for summary, gpu in zip(result.gpus, gpus):
        assert peak(summary.max_batch) <= gpu.available_memory_bytes < peak(summary.max_batch + 1)
    assert analyzer.calls < 12


def test_trace_cache_traces_each_workload_once_across_threads():
    analyzer = CountingAnalyzer()
    cache = TraceCache(maxsize=4, analyzer=analyzer)
    workload = fake_workload(7)
    threads = [threading.Thread(target=cache.get, args=(workload,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert analyzer.calls == 1
    for batch in range(1, 6):
        cache.get(fake_workload(batch))
    assert len(cache) == 4 and workload not in cache


def test_max_batch_on_a_traced_training_step_is_exact():
    import torch

    from torchbudget.engine.api import analyze
    from torchbudget.engine.inputs import InputSpec
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 16 * 16, 10))
    workload = Workload("seq", (InputSpec((4, 3, 16, 16)),), TraceOptions(mode="train", optimizer="adam"))

    traced = []

    def trace(w):
        traced.append(w.batch_size)
        return analyze(model, w.inputs, mode="train", optimizer="adam")

    def required(batch):
        return simulate_memory(trace(workload.with_batch(batch)), NONE).required_bytes

    capacity = required(300) + 12345
    traced.clear()
    best = max_batch(workload, small_gpu(capacity), cache=TraceCache(analyzer=trace), overheads=NONE)
    assert traced == [4, 5, best]   # anchors, then the answer; best + 1 comes from the validated model
    assert required(best) <= capacity < required(best + 1)
    assert best >= 300


# ------------------------------------------------------------------------ weights alone exceed the device
def test_zero_without_tracing_batch_one_when_the_weights_alone_exceed():
    """The workload at batch 8 does not fit and its weights (held from before the first op to the end) already
    exceed the device: batch 1 cannot fit either, and the answer 0 needs no trace of it."""
    analyzer = CountingAnalyzer(weights=10**6)
    assert max_batch(fake_workload(8), small_gpu(10**6 - 1), cache=TraceCache(analyzer=analyzer),
                     overheads=NONE) == 0
    assert analyzer.calls == 1
    # weights that fit on their own: batch 1 is traced, as before
    analyzer = CountingAnalyzer(weights=10**6)
    capacity = peak(1, weights=10**6) - 1
    assert max_batch(fake_workload(8), small_gpu(capacity), cache=TraceCache(analyzer=analyzer), overheads=NONE) == 0
    assert analyzer.calls == 2


def test_weights_alone_exceed_counts_the_fixed_overheads_and_only_weights_held_throughout():
    from torchbudget.engine.solver import weights_alone_exceed

    trace = fake_training_trace(4, weights=10**6)
    assert weights_alone_exceed(trace, NONE, 10**6 - 1) and not weights_alone_exceed(trace, NONE, 10**6)
    overheads = Overheads()
    fixed = overheads.cuda_context_bytes + overheads.cublas_workspace_bytes
    assert weights_alone_exceed(trace, overheads, 10**6 + fixed - 1)
    assert not weights_alone_exceed(trace, overheads, 10**6 + fixed)


def test_the_allocator_replay_of_a_trace_is_computed_once_per_configuration():
    from torchbudget.engine.memory import allocator_replay

    trace = fake_training_trace(4)
    overheads = Overheads()
    first = allocator_replay(trace.storage_events, overheads)
    assert allocator_replay(trace.storage_events, overheads) is first
    squeezed = allocator_replay(trace.storage_events, overheads, capacity_bytes=10**6, device_total_bytes=2 * 10**6)
    assert squeezed is not first
    sizes = [e.nbytes for e in trace.storage_events]
    assert allocator_replay(trace.storage_events, overheads, sizes=sizes) is not first   # other sizes: replayed
    assert allocator_replay(trace.storage_events, overheads, sizes=sizes) == first
