"""validate's CPU-checkable pieces: the real model and inputs it would put on the GPU, and the
predicted-vs-measured arithmetic. (The CUDA run itself is only exercised on a GPU machine.)"""
import pytest
import torch

from torchbudget.engine.api import make_options
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.validate import ValidationRow, _real_inputs, _real_model
from torchbudget.engine.workload import Workload


def test_real_model_has_materialised_finite_weights_of_the_requested_dtype():
    workload = Workload("resnet18", (), make_options())
    model = _real_model(workload, torch.device("cpu"), torch.bfloat16)
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == 11_689_512  # torchvision resnet18
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in params)
    assert all(torch.isfinite(p.float()).all() for p in params)


def test_real_inputs_follow_the_specs():
    specs = (InputSpec((2, 8), "int64", "ids"), InputSpec((2, 8), "float32", "mask"))
    args, kwargs = _real_inputs(specs, torch.device("cpu"), torch.float16)
    assert args == () and set(kwargs) == {"ids", "mask"}
    assert kwargs["ids"].dtype == torch.int64 and bool((kwargs["ids"] == 1).all())
    assert kwargs["mask"].dtype == torch.float16 and kwargs["mask"].shape == (2, 8)
    args, kwargs = _real_inputs((InputSpec((1, 3, 4, 4)),), torch.device("cpu"), torch.float32)
    assert kwargs == {} and args[0].shape == (1, 3, 4, 4)


def test_error_fraction_is_relative_to_the_measurement():
    assert ValidationRow("x", 110.0, 100.0, "bytes").error_fraction == pytest.approx(0.10)
    assert ValidationRow("x", 90.0, None, "bytes").error_fraction is None


def test_calibrated_efficiency_reproduces_the_measured_time():
    from torchbudget.engine.latency import roofline
    from torchbudget.engine.validate import calibrate_efficiency
    from tests.planner_fakes import fake_training_trace, h100_like

    trace, gpu = fake_training_trace(1024), h100_like()
    default = roofline(trace, gpu)
    slower = calibrate_efficiency(trace, gpu, default.estimate_ms * 1.5)
    assert roofline(trace, gpu, slower).estimate_ms == pytest.approx(default.estimate_ms * 1.5, rel=1e-4)
    assert slower.matmul_fraction_of_peak < 0.70 and slower.source.startswith("calibrated")
    # faster than any permitted efficiency: the fastest one allowed (a fraction reaches 1), never above
    fastest = calibrate_efficiency(trace, gpu, default.lower_bound_ms / 2)
    fractions = (fastest.matmul_fraction_of_peak, fastest.conv_fraction_of_peak, fastest.other_fraction_of_peak,
                 fastest.bandwidth_fraction)
    assert max(fractions) == pytest.approx(1.0) and all(f <= 1.0 for f in fractions)


def test_the_real_step_trains_like_the_trace_on_cpu():
    from torchbudget.engine.api import analyze_workload
    from torchbudget.engine.validate import build_step

    workload = Workload("resnet18", (InputSpec((2, 3, 32, 32)),), make_options(mode="train", optimizer="adam"))
    step, model, optimizer = build_step(workload, analyze_workload(workload), torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    step()
    assert all(p.grad is None for p in model.parameters())             # set to None after the step
    state = [v for s in optimizer.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert sum(t.numel() * t.element_size() for t in state) == 2 * sum(t.numel() * 4 for t in before)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # weights moved
