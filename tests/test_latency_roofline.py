"""Roofline bound: closed-form times on an H100-like spec; the estimate never undercuts the bound."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchbudget.engine.latency import roofline
from torchbudget.engine.tracing.recorder import launches_kernel
from torchbudget.engine.overheads import Efficiency
from torchbudget.engine.results import Phase, TraceOptions
from tests.planner_fakes import h100_like, op, result

N = 8192


def test_bf16_matmul_8192_cubed_is_compute_bound_at_exactly_flops_over_peak():
    mm = op(0, "aten.mm.default", flops=2 * N**3, bytes_read=2 * N * N * 2, bytes_written=N * N * 2,
            matmul_like=True, dtype="bfloat16", module="proj")
    report = roofline(result([mm]), h100_like())
    expected_s = 2 * N**3 / 989.4e12
    assert report.lower_bound_ms == pytest.approx(expected_s * 1e3, rel=1e-12)
    assert report.per_module["proj"].compute_bound
    point = report.per_op[0]
    assert point.arithmetic_intensity == pytest.approx(2 * N**3 / (3 * N * N * 2))
    assert point.attainable_flops_per_s == pytest.approx(989.4e12)


def test_elementwise_op_is_memory_bound_at_bytes_over_bandwidth():
    add = op(0, "aten.add.Tensor", flops=N * N, bytes_read=2 * N * N * 4, bytes_written=N * N * 4)
    report = roofline(result([add]), h100_like())
    assert report.lower_bound_ms == pytest.approx(3 * N * N * 4 / 3350e9 * 1e3, rel=1e-12)
    assert not report.per_op[0].compute_bound
    assert report.per_op[0].attainable_flops_per_s == pytest.approx(3350e9 * N * N / (3 * N * N * 4))


def test_fp32_matmul_uses_tf32_peak_only_when_precision_is_tf32():
    mm = op(0, "aten.mm.default", flops=2 * N**3, matmul_like=True, dtype="float32")
    fp32 = roofline(result([mm]), h100_like())
    tf32 = roofline(result([mm], options=TraceOptions(precision="tf32")), h100_like())
    assert fp32.lower_bound_ms == pytest.approx(2 * N**3 / 66.9e12 * 1e3, rel=1e-12)
    assert tf32.lower_bound_ms == pytest.approx(2 * N**3 / 494.7e12 * 1e3, rel=1e-12)


def test_views_launch_no_kernel_and_cost_nothing():
    assert not launches_kernel("aten.view.default")
    assert not launches_kernel("aten.t.default")
    assert not launches_kernel("aten.empty.memory_format")
    assert launches_kernel("aten.mm.default")
    view = op(0, "aten.view.default", bytes_read=10**9, bytes_written=10**9)
    assert roofline(result([view]), h100_like()).lower_bound_ms == 0.0


def test_a_real_trace_marks_views_and_allocations_as_kernel_free():
    from torchbudget.engine.api import analyze

    traced = analyze("resnet18", "1x3x64x64")
    flags = {op.op: op.launches_kernel for op in traced.ops}
    assert flags["aten.convolution.default"] and flags["aten.addmm.default"]
    assert not flags["aten.view.default"] and not flags["aten.t.default"]


def test_phases_and_modules_sum_to_total():
    ops = [op(0, "aten.mm.default", flops=10**12, matmul_like=True, module="a.b"),
           op(1, "aten.relu.default", bytes_read=10**9, bytes_written=10**9, module="a.c"),
           op(2, "aten.mm.default", flops=2 * 10**12, matmul_like=True, phase=Phase.BACKWARD, module="a.b"),
           op(3, "aten._foreach_add.List", bytes_read=10**8, bytes_written=10**8, phase=Phase.OPTIMIZER)]
    report = roofline(result(ops, batch=8), h100_like())
    parts = report.forward.bound_ms + report.backward.bound_ms + report.optimizer.bound_ms
    assert parts == pytest.approx(report.lower_bound_ms)
    assert report.per_module[""].bound_ms == pytest.approx(report.lower_bound_ms)
    assert report.per_module["a"].bound_ms == pytest.approx(report.per_module["a.b"].bound_ms
                                                            + report.per_module["a.c"].bound_ms)
    assert report.throughput_samples_per_s == pytest.approx(8 / (report.estimate_ms / 1e3))


op_strategy = st.builds(
    lambda i, name, flops, read, written, dtype, phase: op(
        i, name, flops=flops, bytes_read=read, bytes_written=written,
        matmul_like=name in ("aten.mm.default", "aten.convolution.default"), dtype=dtype, phase=phase,
        module=f"m{i % 3}.x{i % 2}"),
    st.integers(0, 50), st.sampled_from(["aten.mm.default", "aten.convolution.default", "aten.add.Tensor"]),
    st.integers(0, 10**13), st.integers(0, 10**10), st.integers(0, 10**10),
    st.sampled_from(["float32", "bfloat16", "float16"]), st.sampled_from(list(Phase)))

efficiency_strategy = st.builds(
    Efficiency, st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.floats(0.01, 1.0),
    st.floats(0.0, 50.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(op_strategy, min_size=1, max_size=12), efficiency_strategy)
def test_estimate_is_never_below_the_bound(ops, efficiency):
    report = roofline(result(ops), h100_like(), efficiency)
    assert report.estimate_ms >= report.lower_bound_ms
    assert all(p.estimate_ms >= p.bound_ms for p in report.per_op)
    assert all(m.estimate_ms >= m.bound_ms * (1 - 1e-12) for m in report.per_module.values())
    for phase in (report.forward, report.backward, report.optimizer):
        assert phase.estimate_ms >= phase.bound_ms


def test_traced_bf16_linear_8192_gives_exactly_the_matmul_bound():
    import torch

    from torchbudget.engine.api import analyze

    result = analyze(torch.nn.Linear(N, N, bias=False), f"{N}x{N}", precision="bf16")
    report = roofline(result, h100_like())
    assert report.lower_bound_ms == pytest.approx(2 * N**3 / 989.4e12 * 1e3, rel=1e-12)
    assert [p.op for p in report.per_op] == ["aten.mm.default"]  # the weight's transpose is a view: free
