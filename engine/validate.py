"""Predicted vs measured on a real CUDA GPU: run the workload for real (random weights on the GPU, real
forward / backward / optimizer step) and read torch.cuda's peak counters, NVML and CUDA-event timings.

torch.cuda is touched only inside ``measure``; without CUDA it raises a UserError saying so."""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass

from torchbudget.engine.errors import UserError
from torchbudget.engine.workload import Workload


class NoCudaError(UserError):
    field = "gpu"


@dataclass(frozen=True)
class Measurement:
    device_name: str
    iteration1_max_allocated_bytes: int | None   # torch.cuda.max_memory_allocated over the first step
    steady_max_allocated_bytes: int | None   # over the later steps (optimizer state alive, grads set to None)
    max_reserved_bytes: int | None          # torch.cuda.max_memory_reserved over all steps
    nvml_used_delta_bytes: int | None       # NVML device "used" after the run minus before CUDA was initialised
    median_ms: float                        # CUDA-event time of one step, after warm-up
    min_ms: float
    iterations: int


@dataclass(frozen=True)
class ValidationRow:
    quantity: str
    predicted: float
    measured: float | None
    unit: str                               # "bytes" | "ms"

    @property
    def error_fraction(self) -> float | None:
        if self.measured in (None, 0):
            return None
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class Validation:
    workload: Workload
    plan: object                            # engine.planner.Plan on the local GPU
    measurement: Measurement
    rows: tuple[ValidationRow, ...]
    measured_context_bytes: int | None      # NVML delta - reserved: what Overheads.cuda_context_bytes should be
    calibrated_efficiency: object = None    # engine.overheads.Efficiency reproducing the measured median


def calibrate_efficiency(result, gpu, measured_ms: float, base=None, *, tolerance: float = 1e-6):
    """The Efficiency whose estimate equals ``measured_ms``: every fraction of ``base`` scaled by one
    common factor (found by bisection; the estimate falls as the factor grows). Factors stay <= 1, so a
    run faster than ``base`` allows gives the fastest permitted Efficiency instead."""
    from dataclasses import replace

    from torchbudget.engine.latency import roofline
    from torchbudget.engine.overheads import Efficiency

    base = base or Efficiency()
    fractions = ("matmul_fraction_of_peak", "conv_fraction_of_peak", "other_fraction_of_peak", "bandwidth_fraction")
    ceiling = 1.0 / max(getattr(base, f) for f in fractions)

    def scaled(factor: float) -> Efficiency:
        return replace(base, source=f"calibrated on {gpu.name}",
                       **{f: min(1.0, getattr(base, f) * factor) for f in fractions})

    def estimate(factor: float) -> float:
        return roofline(result, gpu, scaled(factor), detail=False).estimate_ms

    lo, hi = 1e-6, ceiling   # estimate(lo) is huge; estimate(hi) is the fastest allowed
    if estimate(hi) >= measured_ms:
        return scaled(hi)
    while hi - lo > tolerance * hi:
        mid = (lo + hi) / 2
        if estimate(mid) > measured_ms:
            lo = mid
        else:
            hi = mid
    return scaled(hi)


def require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise NoCudaError("validate runs the workload on a CUDA GPU, and torch.cuda.is_available() is False here "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). "
                          "Run it on a machine with an NVIDIA GPU; plan/sweep/compare work without one.")
    return torch


def _nvml_used(index: int) -> int | None:
    """NVML's "used" bytes of the device; None when NVML cannot say (the row is left empty)."""
    from torchbudget.hardware.nvml import refresh_memory

    reading = refresh_memory(index)
    return None if reading is None else reading.used_bytes


def _real_model(workload: Workload, device, param_dtype):
    import torch

    from torchbudget.engine.sources import load_model

    module = load_model(workload.model, workload.model_kwargs).module
    module = module.to_empty(device=device)
    with torch.no_grad():  # random weights: values do not change memory or (dense) speed
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return module.to(param_dtype) if param_dtype is not torch.float32 else module


def _real_inputs(specs, device, param_dtype):
    import torch

    tensors = []
    for spec in specs:
        dtype = spec.torch_dtype
        if dtype.is_floating_point:
            dtype = param_dtype if dtype is torch.float32 else dtype
            tensors.append(torch.randn(spec.shape, dtype=dtype, device=device))
        else:  # ids and masks: ones are a valid token id and an all-visible mask
            tensors.append(torch.ones(spec.shape, dtype=dtype, device=device))
    if all(spec.name for spec in specs):
        return (), {spec.name: t for spec, t in zip(specs, tensors)}
    return tuple(tensors), {}


def build_step(workload: Workload, result, device):
    """(step, model, optimizer): one real step of ``workload`` on ``device`` — inference under no_grad,
    or forward (autocast for -amp), the trace's scalar loss, backward, optimizer step, grads set to None."""
    import torch

    from torchbudget.engine.trace import precision_dtypes
    from torchbudget.engine.tracing import training

    options = workload.options
    param_dtype, autocast_dtype = precision_dtypes(options.precision)
    model = _real_model(workload, device, param_dtype)
    args, kwargs = _real_inputs(result.inputs, device, param_dtype)
    train = options.training
    model.train(train)
    plan = training.checkpoint_plan(model, options.checkpointing) if train else None   # as the trace runs it
    runnable = training.checkpointed_view(model, plan) if plan is not None else model
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = (training.make_optimizer(options.optimizer, trainable, options.optimizer_impl)
                 if train and options.optimizer else None)
    amp = ((lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype
           else contextlib.nullcontext)

    def step():
        if train:
            with amp():
                output = runnable(*args, **kwargs)
            training.scalar_loss(output).backward()
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), amp():
                runnable(*args, **kwargs)

    return step, model, optimizer


def measure_on_cpu(workload: Workload, result, *, warmup: int = 1, iterations: int = 2) -> Measurement:
    """The same real step on the CPU, timed with a wall clock (no CUDA counters: the memory fields are
    None). For dry runs of the validation battery on machines without a GPU."""
    import time

    import torch

    step, _, _ = build_step(workload, result, torch.device("cpu"))
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000.0)
    return Measurement(device_name="cpu (dry run)", iteration1_max_allocated_bytes=None,
                       steady_max_allocated_bytes=None, max_reserved_bytes=None, nvml_used_delta_bytes=None,
                       median_ms=statistics.median(times), min_ms=min(times), iterations=iterations)


def runs_on_gpu(workload: Workload, result, device_index: int = 0) -> bool:
    """One real step of ``workload`` on cuda:device_index: False when it runs out of memory (the real
    largest batch is found by bisection on this)."""
    torch = require_cuda()
    device = torch.device("cuda", device_index)
    step = None
    try:
        step, _, _ = build_step(workload, result, device)
        step()
        step()   # the steady state: optimizer state alive
        torch.cuda.synchronize(device)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        del step
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def measure(workload: Workload, result, *, warmup: int = 3, iterations: int = 10, device_index: int = 0) -> Measurement:
    """Run ``workload`` (inputs as resolved by its trace ``result``) for real on cuda:device_index."""
    torch = require_cuda()

    used_before = _nvml_used(device_index)
    device = torch.device("cuda", device_index)
    tf32 = workload.options.precision == "tf32"
    saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        step, _, _ = build_step(workload, result, device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        iteration1 = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(max(0, warmup - 1)):
            step()
        times = []
        for _ in range(iterations):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        steady = torch.cuda.max_memory_allocated(device)
        reserved = torch.cuda.max_memory_reserved(device)
        used_after = _nvml_used(device_index)
        return Measurement(
            device_name=torch.cuda.get_device_name(device), iteration1_max_allocated_bytes=int(iteration1),
            steady_max_allocated_bytes=int(steady), max_reserved_bytes=int(reserved),
            nvml_used_delta_bytes=None if used_before is None or used_after is None else used_after - used_before,
            median_ms=statistics.median(times), min_ms=min(times), iterations=iterations)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


def validate(workload: Workload, *, warmup: int = 3, iterations: int = 10, device_index: int = 0) -> Validation:
    require_cuda()
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.planner import plan
    from torchbudget.hardware.catalog import resolve_gpu

    gpu = resolve_gpu(f"local:{device_index}")
    cache = TraceCache()
    predicted = plan(workload, gpu, cache=cache, solve_max_batch=False)
    workload = workload.on_gpu(gpu)   # the trace the plan used: this GPU's kernels
    m = measure(workload, cache.get(workload), warmup=warmup, iterations=iterations, device_index=device_index)
    memory, latency = predicted.memory, predicted.latency
    rows = (
        ValidationRow("tensor peak, iteration 1 (max_memory_allocated)", memory.iteration1_peak_bytes,
                      m.iteration1_max_allocated_bytes, "bytes"),
        ValidationRow("allocated peak (max_memory_allocated, all steps)", memory.allocated_peak_bytes,
                      max(m.iteration1_max_allocated_bytes, m.steady_max_allocated_bytes), "bytes"),
        ValidationRow("reserved peak (max_memory_reserved)", memory.reserved_peak_bytes, m.max_reserved_bytes,
                      "bytes"),
        ValidationRow("process footprint incl. CUDA context (NVML used delta)", memory.peak_bytes,
                      m.nvml_used_delta_bytes, "bytes"),
        ValidationRow("step latency, roofline lower bound (CUDA events, median)", latency.lower_bound_ms,
                      m.median_ms, "ms"),
        ValidationRow("step latency, estimate (CUDA events, median)", latency.estimate_ms, m.median_ms, "ms"),
    )
    context = (m.nvml_used_delta_bytes - m.max_reserved_bytes) if m.nvml_used_delta_bytes is not None else None
    calibrated = calibrate_efficiency(cache.get(workload), gpu, m.median_ms, latency.efficiency)
    return Validation(workload, predicted, m, rows, context, calibrated)
