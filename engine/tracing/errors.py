"""Turn an op failure inside the model into a UserError naming the module and both shapes."""
from __future__ import annotations

import torch

from torchbudget.engine.errors import ShapeMismatchError, TraceError, UserError

_SHAPE_WORDS = ("size", "shape", "dim", "channels", "mat1 and mat2", "must match", "broadcast", "expected")
_DATA_DEPENDENT = ("DataDependentOutputException", "DynamicOutputShapeException", "data-dependent")


def looks_like_shapes(message: str) -> bool:
    return any(word in message.lower() for word in _SHAPE_WORDS)


def shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape) or "scalar"


def where(path: str, modules) -> str:
    module = modules.module_at(path) if modules is not None else None
    name = path or "the model's top level"
    return f"{name} ({type(module).__name__})" if module is not None else name


def translate_op_error(exc: Exception, func, args, path: str, modules) -> UserError:
    op = str(func)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    kind = type(exc).__name__
    if any(word in kind or word in first_line for word in _DATA_DEPENDENT):
        return TraceError(f"{op} in {where(path, modules)} depends on tensor values and has no worst-case "
                          f"policy, so the model cannot be traced without data ({first_line})")
    if isinstance(exc, NotImplementedError):
        return TraceError(f"{op} in {where(path, modules)} cannot run without data (no meta/fake kernel): "
                          f"{first_line}")
    if "overflow" in first_line.lower():   # a tensor past 2**63 bytes: its sizes are fine, its product is not
        return TraceError(f"{op} in {where(path, modules)} would make a tensor larger than torch can hold "
                          f"(2**63 - 1 bytes); use smaller input dimensions ({first_line})")
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if isinstance(exc, (RuntimeError, ValueError, IndexError)) and looks_like_shapes(first_line):
        return ShapeMismatchError(_shape_message(func, tensors, path, modules, first_line))
    return TraceError(f"{op} failed in {where(path, modules)}: {kind}: {first_line}")


def _shape_message(func, tensors, path, modules, detail: str) -> str:
    at = f"shapes broke at {where(path, modules)}"
    packet = func.overloadpacket
    if packet in (torch.ops.aten.convolution, torch.ops.aten.convolution_backward) and len(tensors) >= 2:
        x, weight = tensors[0], tensors[1]
        module = modules.module_at(path) if modules is not None else None
        groups = getattr(module, "groups", 1) or 1
        return (f"{at}: input {shape_text(x.shape)} but weight {shape_text(weight.shape)} "
                f"expects {weight.shape[1] * groups} input channels")
    module = modules.module_at(path) if modules is not None else None
    weight = getattr(module, "weight", None)
    if isinstance(module, torch.nn.Linear) and tensors:
        x_shape = modules.current_input_shape or tensors[0].shape
        return (f"{at}: input {shape_text(x_shape)} but weight {shape_text(weight.shape)} "
                f"expects {weight.shape[1]} input features")
    shapes = ", ".join(shape_text(t.shape) for t in tensors)
    extra = f" (weight {shape_text(weight.shape)})" if isinstance(weight, torch.Tensor) else ""
    return f"{at} in {func}: inputs {shapes}{extra}: {detail}"
