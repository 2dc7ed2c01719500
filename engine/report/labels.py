"""Labels and explanations for the verdict and the memory categories (the GUI adds only colours)."""
from __future__ import annotations

from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import MemoryCategory

VERDICT_LABELS = {"fits": "Fits", "tight": "Tight", "does_not_fit": "Does not fit"}
VERDICT_HEADLINES = {"fits": "FITS", "tight": "FITS, TIGHT", "does_not_fit": "DOES NOT FIT"}
VERDICT_SYMBOLS = {"fits": "✓", "tight": "!", "does_not_fit": "✗"}

CATEGORY_LABELS = {
    MemoryCategory.WEIGHTS: "Weights",
    MemoryCategory.BUFFERS: "Buffers",
    MemoryCategory.INPUTS: "Inputs",
    MemoryCategory.KV_CACHE: "KV cache",
    MemoryCategory.ACTIVATIONS: "Activations",
    MemoryCategory.TEMPORARIES: "Temporaries",
    MemoryCategory.GRADIENTS: "Gradients",
    MemoryCategory.OPTIMIZER_STATE: "Optimizer state",
    MemoryCategory.WORKSPACE: "Workspace",
    MemoryCategory.CUDA_CONTEXT: "CUDA context",
    MemoryCategory.COMMUNICATION: "NCCL buffers",
    MemoryCategory.ALLOCATOR: "Allocator slack",
}

CATEGORY_TIPS = {
    MemoryCategory.WEIGHTS: "Parameters of the model, in their stored dtype.",
    MemoryCategory.BUFFERS: "Non-trainable tensors registered on modules (e.g. BatchNorm running stats).",
    MemoryCategory.INPUTS: "The input batch.",
    MemoryCategory.KV_CACHE: "Keys and values of every past token, per layer (serving: prefill fills it, decode "
                             "reads it).",
    MemoryCategory.ACTIVATIONS: "Forward outputs kept alive (saved for backward in training) at the peak.",
    MemoryCategory.TEMPORARIES: "Short-lived tensors alive at the peak moment.",
    MemoryCategory.GRADIENTS: "Parameter gradients (.grad).",
    MemoryCategory.OPTIMIZER_STATE: "Optimizer state, e.g. Adam's two moments per parameter.",
    MemoryCategory.WORKSPACE: "cuBLAS/cuDNN scratch space.",
    MemoryCategory.CUDA_CONTEXT: "Memory the CUDA driver and PyTorch kernels hold once CUDA starts.",
    MemoryCategory.COMMUNICATION: "NCCL's buffers, per process group that runs collectives (several GPUs).",
    MemoryCategory.ALLOCATOR: "Caching-allocator rounding and reserved-but-unused segments.",
}


def verdict_rule(overheads: Overheads = Overheads()) -> str:
    """How the verdict is decided, with the threshold the planner really uses."""
    share = f"{overheads.tight_threshold_fraction:.0%}"
    return (f"Fits: the peak (CUDA context included) leaves at least {share} of the GPU's available memory to spare. "
            f"Tight: it fits with less than {share} to spare. Does not fit: it exceeds the available memory.")
