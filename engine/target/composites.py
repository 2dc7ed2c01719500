"""C++ composites whose insides autocast reaches, replayed at the Python level.

Real autocast works at the dispatcher, so it also casts the ops a C++ composite calls (``cross_entropy_loss``
→ ``log_softmax`` + ``nll_loss_nd`` → ``nll_loss2d``). A TorchFunctionMode only sees the outer call. For
the composites a model's loss commonly goes through, these functions re-run the composite's body
(aten/src/ATen/native/LossNLL.cpp of torch 2.14.1, checked op for op against the real CUDA autocast on fake
CUDA tensors in tests/test_target_semantics.py) through public torch calls, so the active
:class:`~torchbudget.engine.target.mode.CudaSemantics` sees and casts each inner op. Call them with the mode
on the torch-function stack.

Not replayed (run as one opaque call, inner casts missed; noted): ``cross_entropy`` with class weights
*and* label smoothing, ``pairwise_distance``, ``linalg_norm``/``linalg_cond``, RNN layers.
"""
from __future__ import annotations

import torch

aten = torch.ops.aten
_MEAN, _SUM, _NONE = 1, 2, 0   # at::Reduction


def nll_loss_nd(self, target, weight=None, reduction=_MEAN, ignore_index=-100):
    """at::native::nll_loss_nd_symint."""
    if self.dim() < 1:
        raise ValueError("Expected 1 or more dimensions (got 0)")
    if self.dim() != 1 and self.size(0) != target.size(0):
        raise ValueError(f"Expected input batch_size ({self.size(0)}) to match target batch_size "
                         f"({target.size(0)}).")
    if self.dim() in (1, 2):
        return torch._C._nn.nll_loss(self, target, weight, reduction, ignore_index)
    if self.dim() == 4:
        return torch._C._nn.nll_loss2d(self, target, weight, reduction, ignore_index)
    n, c = self.size(0), self.size(1)
    out_size = [n, *target.shape[1:]]
    if tuple(target.shape[1:]) != tuple(self.shape[2:]):
        raise ValueError(f"Expected target size {[n, *self.shape[2:]]}, got {list(target.shape)}")
    input_ = self.contiguous().view(n, c, 1, -1) if target.numel() > 0 else self.view(n, c, 0, 0)
    target_ = target.contiguous().view(n, 1, -1)
    out = torch._C._nn.nll_loss2d(input_, target_, weight, reduction, ignore_index)
    return out if reduction != _NONE else out.view(out_size)


def _prob_target(self, target_, weight, reduction, label_smoothing):
    class_dim = 0 if self.dim() == 1 else 1
    n_classes = self.size(class_dim)
    inp = torch.log_softmax(self, class_dim, self.dtype)
    target = target_ * (1 - label_smoothing) + (label_smoothing / n_classes) if label_smoothing > 0.0 else target_
    prod = inp * target
    if weight is not None:
        shape = [1] * inp.dim()
        if inp.dim() > 1:
            shape[class_dim] = weight.size(0)
            weight = weight.view(shape)
        prod = prod * weight
    if reduction == _MEAN:
        if inp.numel() == 0:
            return -(prod.sum().fill_(float("nan")))
        return aten.div.Scalar(-prod.sum(), inp.numel() // n_classes)
    if reduction == _SUM:
        return -prod.sum()
    return -prod.sum(class_dim)


def _label_smoothing(self, target, reduction, ignore_index, label_smoothing):
    class_dim = 0 if self.dim() == 1 else 1
    inp = torch.log_softmax(self, class_dim, self.dtype)
    nllloss = nll_loss_nd(inp, target, None, reduction, ignore_index)
    n_classes = inp.size(class_dim)
    smooth_loss = -inp.sum(class_dim)
    ignore_mask = target == ignore_index
    smooth_loss.masked_fill_(ignore_mask, 0.0)
    if reduction == _MEAN:
        count = (~ignore_mask).sum()   # C++ (GCC) evaluates operator/'s right operand first
        ret = smooth_loss.sum() / count
    elif reduction == _SUM:
        ret = smooth_loss.sum()
    else:
        ret = smooth_loss
    # (1 - ls) * nllloss + ret * (ls / n): double * Tensor is mul.Scalar; right operand first
    smooth = aten.mul.Scalar(ret, label_smoothing / n_classes)
    return aten.mul.Scalar(nllloss, 1 - label_smoothing) + smooth


def cross_entropy_loss(self, target, weight=None, reduction=_MEAN, ignore_index=-100, label_smoothing=0.0):
    """at::native::cross_entropy_loss_symint. Returns NotImplemented for the one branch not replayed
    (class weights with label smoothing on class-index targets)."""
    if tuple(self.shape) == tuple(target.shape):
        if not target.is_floating_point():
            raise RuntimeError("Expected floating point type for target with class probabilities, got "
                               f"{target.dtype}")
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        return _prob_target(self, target, weight, reduction, label_smoothing)
    if label_smoothing > 0.0:
        if label_smoothing > 1.0:
            raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        if weight is not None:
            return NotImplemented
        return _label_smoothing(self, target, reduction, ignore_index, label_smoothing)
    class_dim = 0 if self.dim() == 1 else 1
    return nll_loss_nd(torch.log_softmax(self, class_dim, self.dtype), target, weight, reduction, ignore_index)


# the builtins (torch._C._nn.X) these replace: parameter names and defaults, in order
SIGNATURES = {
    "cross_entropy_loss": (("self", "target", "weight", "reduction", "ignore_index", "label_smoothing"),
                           (None, None, None, _MEAN, -100, 0.0)),
    "nll_loss_nd": (("self", "target", "weight", "reduction", "ignore_index"), (None, None, None, _MEAN, -100)),
}
REPLAYS = {"cross_entropy_loss": cross_entropy_loss, "nll_loss_nd": nll_loss_nd}

__all__ = ["cross_entropy_loss", "nll_loss_nd", "REPLAYS", "SIGNATURES"]
