"""simulate_memory on hand-built traces whose peaks follow from a closed form."""
import pytest

from torchbudget.errors import UserError

from torchbudget.engine.memory import required_bytes, simulate_memory, uses_cudnn
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import MemoryCategory as C
from tests.planner_fakes import alloc, fake_training_trace, free, op, result

NONE = Overheads.none()
MIB = 2**20


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


ALLOCATOR_ONLY = Overheads(cuda_context_bytes=0, cublas_workspace_bytes=0, cudnn_workspace_bytes=0)


def test_the_footprint_is_the_caching_allocators_reserved_segments():
    # 1, 513 and 1024 B are small-pool requests (<= 1 MiB): rounded to 512, 1024, 1024 B blocks carved from
    # one 2 MiB small segment (kSmallBuffer); allocated = the blocks, reserved = the segment
    events = [alloc(-1, 1, 1, C.WEIGHTS), alloc(0, 2, 513, C.ACTIVATIONS), alloc(0, 3, 1024, C.TEMPORARIES)]
    profile = simulate_memory(result([op(0)], events), ALLOCATOR_ONLY)
    assert profile.trace_peak_bytes == 1 + 513 + 1024
    assert profile.tensor_peak_bytes == profile.allocated_peak_bytes == 512 + 1024 + 1024
    assert profile.reserved_peak_bytes == profile.peak_bytes == 2 * MIB
    assert profile.by_category[C.ALLOCATOR] == 2 * MIB - (1 + 513 + 1024)   # everything beyond the tensors


def test_a_training_step_is_replayed_twice_on_one_cache():
    # step 1: weights 4 MiB (a 20 MiB large segment, split: 16 MiB cached), activation 12 MiB (>= 10 MiB: its
    # own 12 MiB segment), freed; gradient 4 MiB (best fit: the cached 12 MiB block, split 4 + 8); optimizer
    # state 12 MiB (best fit: the 16 MiB remainder, split 12 + 4). Reserved 20 + 12 = 32 MiB.
    # between steps zero_grad(set_to_none) frees the gradient (the 12 MiB block merges again); step 2 (weights
    # and state exist): the activation takes the 12 MiB segment whole, the gradient the 4 MiB remainder of
    # the first segment: nothing new is reserved. Allocated peak: step 2's weights + state + activation, 28 MiB.
    events = [alloc(-1, 1, 4 * MIB, C.WEIGHTS), alloc(0, 2, 12 * MIB, C.ACTIVATIONS),
              free(1, 2, 12 * MIB, C.ACTIVATIONS), alloc(1, 3, 4 * MIB, C.GRADIENTS),
              alloc(2, 4, 12 * MIB, C.OPTIMIZER_STATE)]
    profile = simulate_memory(result([op(0), op(1), op(2)], events), ALLOCATOR_ONLY)
    assert profile.iteration1_peak_bytes == 4 * MIB + 4 * MIB + 12 * MIB + 0   # after the state allocation
    assert profile.steady_state_peak_bytes == 4 * MIB + 12 * MIB + 12 * MIB   # state alive with the activation
    assert profile.reserved_peak_bytes == 32 * MIB
    assert profile.allocated_peak_bytes == 28 * MIB


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
        Overheads(tight_threshold_fraction=1.5)
    with pytest.raises(UserError, match="max_split_size_mb"):
        Overheads.with_alloc_conf("max_split_size_mb:1")
    with pytest.raises(ValueError):
        Overheads(cuda_context_bytes=-1)
