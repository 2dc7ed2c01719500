"""transformers' attention-mask decision on data-less tensors: what a real run of the same inputs decides.

Without an ``attention_mask`` and a cache (a training step on input ids), transformers' ``create_causal_mask``
looks for packed sequences in the position ids (``masking_utils.find_packed_sequence_indices``): the model
makes them itself from ``arange``, one sequence per row, so a real run finds none and returns ``None``; the
mask is then skipped (SDPA's ``is_causal``) and GQA goes to SDPA's ``enable_gqa`` instead of ``repeat_kv``
copies of K and V. On a FakeTensor transformers cannot read the values and, treating it like a compile trace
(``is_tracing``), keeps the packed-sequence mask: a materialised 4-D mask and two K/V copies per layer, saved for
backward, that the real run never allocates. ``one_sequence_per_row()`` keeps the function's own ops (its
temporaries are the real run's) and decides as the real run does when the answer is a data-less tensor."""
from __future__ import annotations

import contextlib
import sys

import torch
from torch._subclasses.fake_tensor import FakeTensor

NOTE = ("transformers: position ids taken as one sequence per row (no packed sequences), as a real run of "
        "input ids without an attention mask finds: the causal mask is left to SDPA (is_causal)")


class _Decision:
    used = False


@contextlib.contextmanager
def one_sequence_per_row():
    """While open, ``transformers.masking_utils.find_packed_sequence_indices`` returns None (no packing) for
    data-less position ids; ``.used`` says whether it did. Nothing happens if transformers is not loaded or
    has no such function. Process-wide: the trace holds its lock."""
    decision = _Decision()
    module = sys.modules.get("transformers.masking_utils")
    original = getattr(module, "find_packed_sequence_indices", None)
    if original is None:
        yield decision
        return

    def find_packed_sequence_indices(position_ids, *args, **kwargs):
        found = original(position_ids, *args, **kwargs)
        if isinstance(found, FakeTensor) or (isinstance(found, torch.Tensor) and found.device.type == "meta"):
            decision.used = True
            return None
        return found

    module.find_packed_sequence_indices = find_packed_sequence_indices
    try:
        yield decision
    finally:
        module.find_packed_sequence_indices = original
