"""What the user's GPU runs, applied to a fake-CPU trace: CUDA SDPA backend selection and dispatch,
CUDA autocast op lists, and the CUDA branches of a few composites (torch 2.14.1). No Qt.

``CudaSemantics`` (mode.py) is the entry point; ``sdpa`` and ``autocast`` hold the rules."""
from torchbudget.engine.target.mode import (CudaSemantics, SdpaCall, active_semantics,
                                            checkpoint_context_fn)
from torchbudget.engine.target.sdpa import (ATTENTION_CHOICES, DEFAULT_CUDNN_VERSION, SdpaChoice,
                                            SdpaNoKernelError, Target, select_backend)

__all__ = ["CudaSemantics", "SdpaCall", "active_semantics", "checkpoint_context_fn", "SdpaChoice",
           "SdpaNoKernelError", "Target", "select_backend", "ATTENTION_CHOICES", "DEFAULT_CUDNN_VERSION"]
