"""simulate_memory on hand-built traces whose peaks follow from a closed form."""
import pytest

from torchbudget.engine.memory import required_bytes, simulate_memory, uses_cudnn
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import MemoryCategory as C
from tests.planner_fakes import alloc, fake_training_trace, free, op, result

NONE = Overheads.none()


def closed_form(batch, weights=10_000, per_sample=3_000):
    inp = batch * 3 * 32 * 32 * 4
    acts = 4 * per_sample * batch
    temp = batch * 777
    iteration1 = max(weights + inp + acts + temp, weights + inp + acts + weights // 4, 5 * weights + inp)
    steady = max(weights + inp + acts + temp + 2 * weights, weights + inp + acts + weights // 4 + 2 * weights,
                 5 * weights + inp)
    return iteration1, steady


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_training_peaks_match_closed_form(batch):
    profile = simulate_memory(fake_training_trace(batch), NONE)
    iteration1, steady = closed_form(batch)
    assert profile.trace_peak_bytes == iteration1
    assert profile.iteration1_peak_bytes == iteration1
    assert profile.steady_state_peak_bytes == steady
    assert profile.peak_bytes == max(iteration1, steady)


def test_steady_state_carries_optimizer_state_through_forward():
    profile = simulate_memory(fake_training_trace(64), NONE)
    # at batch 64 the forward temporary is the peak; in steady state Adam's 2 x weights is alive then
    assert profile.by_category[C.OPTIMIZER_STATE] == 2 * 10_000
    assert profile.by_category[C.GRADIENTS] == 0
    assert profile.by_category[C.ACTIVATIONS] == 4 * 3_000 * 64
    assert profile.peak_module == "head"


def test_breakdown_sums_to_peak_and_overheads_are_added():
    overheads = Overheads()
    trace = fake_training_trace(8)
    profile = simulate_memory(trace, overheads)
    assert sum(profile.by_category.values()) == profile.peak_bytes
    assert profile.by_category[C.CUDA_CONTEXT] == overheads.cuda_context_bytes
    assert not uses_cudnn(trace)
    assert profile.by_category[C.WORKSPACE] == overheads.cublas_workspace_bytes
    assert profile.required_bytes == profile.peak_bytes   # the CUDA context is part of what must fit
    assert required_bytes(trace.storage_events, overheads, has_conv=False) == profile.required_bytes


def test_allocator_rounds_every_allocation_to_512_bytes():
    events = [alloc(-1, 1, 1, C.WEIGHTS), alloc(0, 2, 513, C.ACTIVATIONS), alloc(0, 3, 1024, C.TEMPORARIES)]
    trace = result([op(0)], events)
    rounding_only = Overheads(cuda_context_bytes=0, cublas_workspace_bytes=0, cudnn_workspace_bytes=0,
                              allocator_reserve_fraction=0.0)
    profile = simulate_memory(trace, rounding_only)
    assert profile.trace_peak_bytes == 1 + 513 + 1024
    assert profile.peak_bytes == 512 + 1024 + 1024
    assert profile.by_category[C.ALLOCATOR] == profile.peak_bytes - profile.trace_peak_bytes
    with_reserve = simulate_memory(trace, Overheads(cuda_context_bytes=0, cublas_workspace_bytes=0,
                                                    allocator_reserve_fraction=0.5))
    assert with_reserve.by_category[C.ALLOCATOR] == (2560 - 1538) + 1280


def test_timeline_records_the_largest_live_bytes_per_op():
    events = [alloc(-1, 1, 100, C.WEIGHTS), alloc(0, 2, 50, C.TEMPORARIES), free(0, 2, 50, C.TEMPORARIES),
              alloc(1, 3, 10, C.ACTIVATIONS)]
    profile = simulate_memory(result([op(0), op(1)], events), NONE)
    assert profile.timeline == ((-1, 100), (0, 150), (1, 110))
    assert profile.peak_op_index == 0
    assert profile.peak_bytes == 150


def test_inference_trace_has_equal_iteration_and_steady_peaks():
    events = [alloc(-1, 1, 1000, C.WEIGHTS), alloc(0, 2, 300, C.ACTIVATIONS)]
    profile = simulate_memory(result([op(0)], events), NONE)
    assert profile.iteration1_peak_bytes == profile.steady_state_peak_bytes == 1300


def test_cudnn_workspace_only_with_convolutions():
    events = [alloc(-1, 1, 1000, C.WEIGHTS)]
    conv = result([op(0, "aten.convolution.default", matmul_like=True)], events)
    overheads = Overheads()
    assert simulate_memory(conv, overheads).by_category[C.WORKSPACE] == (
        overheads.cublas_workspace_bytes + overheads.cudnn_workspace_bytes)


def test_overheads_reject_nonsense():
    with pytest.raises(ValueError):
        Overheads(allocator_reserve_fraction=1.5)
    with pytest.raises(ValueError):
        Overheads(cuda_context_bytes=-1)
