"""FSDP's step of a model with identical repeated blocks, traced as 3 blocks (checked against 4) and replicated
(engine/tracing/unroll.py: the rule, the check, the fall-back to the full trace).

What is specific to several GPUs: the shallow model is a copy of the model's first blocks (the wrappers change
the modules they wrap) sharded by ``fully_shard`` as the full model would be, unit by unit; the blocks that did
not run get rank 0's sharded parameters (each the block-1 shard's storage layout: FSDP's padded shard) before the
step and its sharded gradients before the optimizer step, which runs over every shard for real; every collective
of the middle block is replicated with its ops. Taken for FSDP (full shard and grad-op) training with an
elementwise optimizer; everything else is traced in full."""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import replace

import torch
from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily

from torchbudget.engine import finetune
from torchbudget.engine.tracing import unroll
from torchbudget.engine.tracing.blocks import find_blocks

STRATEGIES = ("fsdp", "fsdp-grad-op")
SHALLOW = 4


def eligible(model: torch.nn.Module, options, elementwise: frozenset) -> unroll.Plan | None:
    if options.strategy not in STRATEGIES or not options.training or options.generation:
        return None
    if options.grad_accum > 1 or finetune.needed(options) or (options.optimizer or "adamw") not in elementwise:
        return None
    repeated = unroll.plan(model, generation=False)
    if repeated is None or repeated.count < SHALLOW + 2:
        return None
    if any(True for _, block in find_blocks(model) for _ in block.buffers()):
        return None
    # 4 blocks run (checked against 5): FSDP keeps the input of the last block alive, so the replicated block
    # must not be the one before it
    return replace(repeated, shallow=SHALLOW)


def shallow_model(model: torch.nn.Module, repeated: unroll.Plan, depth: int) -> torch.nn.Module:
    """A model of its own (the wrappers are applied in place) with the first ``depth`` blocks; on meta."""
    return copy.deepcopy(unroll.shallow_view(model, repeated, depth))


def _local(t):
    from torch.distributed.tensor import DTensor

    return t._local_tensor if isinstance(t, DTensor) else t


def mirror(tensors: list, fake_mode) -> list:
    """New fake tensors laid out as ``tensors``: one new storage of the same size per storage they share, each
    tensor a view of it with the same offset, shape and strides (FSDP's padded shards, flat gradient buffers)."""
    out, bases = [], {}
    with unset_fake_temporarily():
        for t in tensors:
            storage = t.untyped_storage()
            base = bases.get(storage._cdata)
            if base is None:
                base = bases[storage._cdata] = torch.empty(storage.nbytes(), dtype=torch.uint8,
                                                            device="meta").untyped_storage()
            view = torch.empty(0, dtype=t.dtype, device="meta")
            view.set_(base, t.storage_offset(), t.shape, t.stride())
            out.append(FakeTensor(fake_mode, view, t.device))
    return out


class Pending:
    """Rank 0's tensors of the blocks a shallow step does not run: sharded parameters before the step, sharded
    gradients before the optimizer step (the optimizer then steps them with the others)."""

    def __init__(self, repeated: unroll.Plan, depth: int, fake_mode, optimizer: bool):
        self.layer = unroll.block_of(repeated)
        self.prefix = repeated.container + "."
        self.count, self.depth, self.fake_mode, self.optimizer = repeated.count, depth, fake_mode, optimizer
        self.params: list[tuple[str, torch.Tensor, bool, object]] = []   # name, local shard, trains, template
        self.weight_sids: list[int] = []
        self.grads: dict[int, tuple[str, ...]] = {}
        self.pending_grads: dict[int, tuple[str, ...]] = {}
        self.order: list[int] | None = None

    def _block(self, name: str) -> int:
        found = self.layer(name)
        return found[0] if found else -1

    def _template(self, params) -> list:
        return [(self.layer(name)[1], name, p, trains) for name, p, trains in params if self._block(name) == 1]

    def weights(self, params, storage, roles) -> None:
        template = self._template(params)
        for j in range(self.depth, self.count):
            for (rest, _, p, trains), t in zip(template, mirror([_local(p) for _, _, p, _ in template], self.fake_mode)):
                storage.track(t, -1)
                sids = storage.sids_of(t)
                roles.weights.update(sids)
                self.weight_sids += [s for s in sids if s not in self.weight_sids]
                self.params.append((f"{self.prefix}{j}{rest}", t, trains, p))

    def start_order(self, params, storage, lives) -> list[int]:
        """The storages allocated before the first op, the blocks not run right after the last block that ran
        (where the full model's units would have put them)."""
        last = {sid for name, p, _ in params if self._block(name) == self.depth - 1 for sid in storage.sids_of(_local(p))}
        pending = set(self.weight_sids)
        first = [life.storage_id for life in sorted(lives, key=lambda life: life.alloc_seq)
                 if life.alloc_index == -1 and life.storage_id not in pending]
        at = max((i for i, sid in enumerate(first) if sid in last), default=len(first) - 1) + 1
        return first[:at] + self.weight_sids + first[at:]

    def gradients(self, params, storage, roles) -> None:
        by_sid = defaultdict(list)
        for name, p, trains in params:
            if trains and p.grad is not None:
                for sid in storage.sids_of(_local(p.grad)):
                    by_sid[sid].append(name)
        self.grads = {sid: tuple(names) for sid, names in by_sid.items()}
        if not self.optimizer:
            return
        template = [entry for entry in self._template(params) if entry[3] and entry[2].grad is not None]
        shards = {name: t for name, t, _, _ in self.params}
        made = defaultdict(list)
        for j in range(self.depth, self.count):
            grads = mirror([_local(p.grad) for _, _, p, _ in template], self.fake_mode)
            for (rest, _, _, _), g in zip(template, grads):
                name = f"{self.prefix}{j}{rest}"
                shards[name].grad = g
                storage.track(g, storage.op_index)
                for sid in storage.sids_of(g):
                    roles.gradients.add(sid)
                    made[sid].append(name)
        self.pending_grads = {sid: tuple(names) for sid, names in made.items()}

    def extend(self, groups: list, params) -> list:
        """The optimizer's groups with the blocks not run after the last block that ran, in the model's order."""
        from torch.distributed.tensor import DTensor

        named = {id(p._local_tensor if isinstance(p, DTensor) else p): name for name, p, _ in params}
        extra = [t for _, t, trains, _ in self.params if trains]
        out, placed = [], False
        for group in groups:
            members = list(group["params"])
            at = [i for i, p in enumerate(members) if self._block(named.get(id(p), "")) == self.depth - 1]
            if at and not placed:
                members[at[-1] + 1:at[-1] + 1] = extra
                placed = True
            out.append({**group, "params": members})
        if extra and not placed:
            raise unroll.NotPeriodic("the optimizer's parameters of the last block were not found")
        return out


__all__ = ["Pending", "eligible", "mirror", "shallow_model"]
