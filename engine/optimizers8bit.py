"""bitsandbytes' AdamW8bit, re-created for the trace (bitsandbytes is never imported).

State per parameter (``Optimizer2State.init_state`` in bitsandbytes/optim/optimizer.py at bitsandbytes 95f9af3,
Aug 2026, the same since 0.45):

* ``p.numel() < min_8bit_size`` (4096): 32-bit state, ``state1`` and ``state2`` fp32 like ``p`` (8 B per element);
* otherwise ``state1``/``state2`` uint8 like ``p`` and ``absmax1``/``absmax2`` fp32 of ``ceil(n / 256)`` blocks
  (``blocksize = 256``): 2 B per element + 8 B per 256 elements;
* ``state["step"]`` is a Python int (no tensor); ``qmap1``/``qmap2`` are the optimizer's two 256-entry fp32
  quantisation maps (``create_dynamic_map`` signed/unsigned), shared by every parameter (2 KiB in all).

The step launches one in-place kernel per parameter (``optimizer_update_8bit_blockwise`` /
``optimizer_update_32bit``): no temporaries. AdamW8bit's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8,
weight_decay 1e-2."""
from __future__ import annotations

import torch

from torchbudget.engine.ops import quantized as qops  # noqa: F401  (registers the torchbudget:: ops)

MIN_8BIT_SIZE = 4096
BLOCKSIZE = 256
QMAP_SIZE = 256
_ops = torch.ops.torchbudget


def state_bytes(numel: int) -> int:
    """bitsandbytes' AdamW8bit state bytes for one parameter of ``numel`` elements (without the shared maps)."""
    if numel < MIN_8BIT_SIZE:
        return 8 * numel
    return 2 * numel + 2 * 4 * (-(-numel // BLOCKSIZE))


class AdamW8bit(torch.optim.Optimizer):
    """The state layout and kernels of ``bitsandbytes.optim.AdamW8bit`` (no arithmetic runs: the kernels are
    ``torchbudget::`` ops with fake kernels, for the trace)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 min_8bit_size: int = MIN_8BIT_SIZE):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.min_8bit_size = min_8bit_size
        self._qmaps: tuple[torch.Tensor, torch.Tensor] | None = None

    def _maps(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._qmaps is None:   # name2qmap["dynamic"], ["udynamic"], moved to the parameters' device once
            self._qmaps = (like.new_empty((QMAP_SIZE,), dtype=torch.float32),
                           like.new_empty((QMAP_SIZE,), dtype=torch.float32))
        return self._qmaps

    def _init_state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        state["step"] = 0
        if p.numel() < self.min_8bit_size:
            state["state1"] = torch.zeros_like(p, dtype=torch.float32)
            state["state2"] = torch.zeros_like(p, dtype=torch.float32)
        else:
            qmap1, qmap2 = self._maps(p)
            state["state1"] = torch.zeros_like(p, dtype=torch.uint8)
            state["qmap1"] = qmap1
            state["state2"] = torch.zeros_like(p, dtype=torch.uint8)
            state["qmap2"] = qmap2
            blocks = -(-p.numel() // BLOCKSIZE)
            state["absmax1"] = p.new_zeros((blocks,), dtype=torch.float32)
            state["absmax2"] = p.new_zeros((blocks,), dtype=torch.float32)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p] if self.state.get(p) else self._init_state(p)
                state["step"] += 1
                if state["state1"].dtype == torch.float32:
                    _ops.optimizer_update_32bit(p, p.grad, state["state1"], state["state2"])
                else:
                    _ops.optimizer_update_8bit_blockwise(p, p.grad, state["state1"], state["state2"],
                                                         state["absmax1"], state["absmax2"],
                                                         state["qmap1"], state["qmap2"])
        return None
