"""Small hand-built traces and GPUs for the planner's tests (no model, no tracing)."""
from __future__ import annotations

from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import (AnalysisResult, MemoryCategory, OpKind, OpRecord, OpStatus, Phase, StorageEvent, Totals,
                            TraceOptions)
from torchbudget.engine.tracing.recorder import launches_kernel
from torchbudget.engine.workload import Workload
from torchbudget.hardware.spec import GpuSpec

GIB = 2**30


def h100_like(usable_bytes: int = 79 * GIB) -> GpuSpec:
    return GpuSpec(name="H100 SXM (test)", vendor="NVIDIA", memory_bytes=80 * GIB, available_memory_bytes=usable_bytes,
                   bandwidth_gbs=3350.0,
                   peak_tflops={"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9,
                                "int8": 1978.9})


def small_gpu(usable_bytes: int, name: str = "small (test)") -> GpuSpec:
    return GpuSpec(name=name, vendor="NVIDIA", memory_bytes=usable_bytes, available_memory_bytes=usable_bytes,
                   bandwidth_gbs=500.0, peak_tflops={"fp32": 10.0, "tf32": 40.0, "fp16": 80.0, "bf16": 80.0})


def totals() -> Totals:
    return Totals(0, 0, 0, 0, 0, {}, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def op(index: int, name: str = "aten.add.Tensor", *, flops: int = 0, bytes_read: int = 0, bytes_written: int = 0,
       matmul_like: bool = False, dtype: str = "float32", phase: Phase = Phase.FORWARD,
       module: str = "", kind: OpKind | None = None) -> OpRecord:
    if kind is None:
        kind = (OpKind.CONV if "convolution" in name else OpKind.MATMUL) if matmul_like else OpKind.ELEMENTWISE
    return OpRecord(index, name, module, phase, (), (), bytes_read, bytes_written, flops // 2 if matmul_like else 0,
                    flops, OpStatus.COUNTED, kind, dtype, launches_kernel(name))


def result(ops=(), events=(), *, batch: int = 1, options: TraceOptions = TraceOptions()) -> AnalysisResult:
    return AnalysisResult("fake", (InputSpec((batch, 3, 32, 32)),), options, totals(), (), tuple(ops),
                          tuple(events), (), 1.0)


def alloc(op_index, sid, nbytes, category, phase=Phase.FORWARD):
    return StorageEvent(op_index, "alloc", sid, nbytes, category, phase)


def free(op_index, sid, nbytes, category, phase=Phase.FORWARD):
    return StorageEvent(op_index, "free", sid, nbytes, category, phase)


def fake_training_trace(batch: int, *, weights: int = 10_000, per_sample: int = 3_000,
                        lumpy: bool = False) -> AnalysisResult:
    """A training step shaped like a real one: weights+input, forward activations that scale with batch,
    a temporary, backward grads, then an optimizer step allocating Adam state (2 x weights).
    ``lumpy`` adds a temporary that grows in steps of 4 samples (not affine in batch)."""
    C = MemoryCategory
    ev = [alloc(-1, 1, weights, C.WEIGHTS), alloc(-1, 2, batch * 3 * 32 * 32 * 4, C.INPUTS)]
    ops = []
    sid = 10
    for i in range(4):  # forward: 4 layers, each keeps an activation
        ops.append(op(len(ops), "aten.mm.default", flops=2 * batch * 1000, bytes_read=batch * 100,
                      bytes_written=per_sample * batch, matmul_like=True, module=f"layer{i}"))
        ev.append(alloc(len(ops) - 1, sid, per_sample * batch, C.ACTIVATIONS))
        sid += 1
    ops.append(op(len(ops), "aten.relu.default", bytes_read=batch * 500, bytes_written=batch * 500, module="head"))
    temp = (-(-batch // 4) * 4) * 777 if lumpy else batch * 777
    ev.append(alloc(len(ops) - 1, 99, temp, C.TEMPORARIES))
    ev.append(free(len(ops) - 1, 99, temp, C.TEMPORARIES))
    for i in reversed(range(4)):  # backward: free each activation, allocate a grad
        ops.append(op(len(ops), "aten.mm.default", flops=4 * batch * 1000, matmul_like=True, phase=Phase.BACKWARD,
                      module=f"layer{i}"))
        ev.append(alloc(len(ops) - 1, 100 + i, weights // 4, C.GRADIENTS, Phase.BACKWARD))
        ev.append(free(len(ops) - 1, 10 + i, per_sample * batch, C.ACTIVATIONS, Phase.BACKWARD))
    ops.append(op(len(ops), "aten._foreach_add.List", bytes_read=weights * 3, bytes_written=weights,
                  phase=Phase.OPTIMIZER))
    ev.append(alloc(len(ops) - 1, 200, weights, C.OPTIMIZER_STATE, Phase.OPTIMIZER))
    ev.append(alloc(len(ops) - 1, 201, weights, C.OPTIMIZER_STATE, Phase.OPTIMIZER))
    ev.append(alloc(len(ops) - 1, 202, weights, C.TEMPORARIES, Phase.OPTIMIZER))  # foreach transient
    ev.append(free(len(ops) - 1, 202, weights, C.TEMPORARIES, Phase.OPTIMIZER))
    return result(ops, ev, batch=batch, options=TraceOptions(mode="train", optimizer="adam"))


class CountingAnalyzer:
    """A stand-in for engine.api.analyze_workload: builds fake traces and counts calls."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = 0

    def __call__(self, workload: Workload) -> AnalysisResult:
        self.calls += 1
        return fake_training_trace(workload.batch_size, **self.kwargs)


def fake_workload(batch: int = 1) -> Workload:
    return Workload("fake", (InputSpec((batch, 3, 32, 32)),), TraceOptions(mode="train", optimizer="adam"))
