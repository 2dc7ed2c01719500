"""The recorder under torch.distributed: engine.tracing's Recorder, seeing what one rank runs.

* DTensor ops are passed down (``NotImplemented``): DTensor desugars them into ops on its local shards, which
  come back to the recorder and are recorded with the shapes this rank really computes and stores.
* Ops of DTensor's sharding propagation (global-shaped shadows run in the propagation's own fake mode, see
  engine.distributed.session) are run, not recorded.
* ``wait_tensor`` returns its input, as on a GPU (its fake kernel would allocate a copy).
* Collectives are recorded as ops (``OpKind.COLLECTIVE``) and also as ``CollectiveCall``s: kind, the bytes the
  bus-bandwidth formulas take, group size and which group.
* Storages change size in place: FSDP2 frees a gathered parameter with ``resize_(0)`` and gathers into the same
  storage again. Each sized period is one storage life (an alloc and a free event).
* While the wrappers are applied (``setup``), nothing is recorded as an op; storages made then and still alive
  when the step starts (DDP's gradient buckets, FSDP's sharded parameters) are allocated before the first op."""
from __future__ import annotations

import weakref
from dataclasses import replace

import torch
from torch._guards import active_fake_mode
from torch.distributed.tensor import DTensor

from torchbudget.engine.results import CollectiveCall, MemoryCategory, OpKind, Phase
from torchbudget.engine.tracing.modules import ModuleStack
from torchbudget.engine.tracing.recorder import Recorder, _collect_tensors
from torchbudget.engine.tracing.storage import StorageLife, StorageTracker
from torchbudget.engine.distributed.session import FakeCluster, group_size

c10d = torch.ops.c10d
funcol = torch.ops._c10d_functional
_WAIT = funcol.wait_tensor.default


def _nbytes(items) -> int:
    return sum(t.numel() * t.element_size() for t in _collect_tensors((items,), []))   # a tensor, or a list of them


def _collective(func, args, kwargs):
    """(kind, S bytes, group) of a collective op, or None. S as nccl-tests counts it: all-gather the gathered
    output, reduce-scatter the input, all-reduce / broadcast the tensor(s), all-to-all the input."""
    name = func._schema.name.split("::")[-1]
    namespace = func.namespace
    a = list(args) + list((kwargs or {}).values())
    if namespace == "c10d":
        if name in ("allreduce_", "allreduce_coalesced_"):
            return "all_reduce", _nbytes(a[0]), a[1]
        if name in ("broadcast_",):
            return "broadcast", _nbytes(a[0]), a[1]
        if name in ("_allgather_base_", "allgather_", "allgather_coalesced_", "allgather_into_tensor_coalesced_"):
            return "all_gather", _nbytes(a[0]), a[2]
        if name in ("_reduce_scatter_base_", "reduce_scatter_", "reduce_scatter_tensor_coalesced_"):
            return "reduce_scatter", _nbytes(a[1]), a[2]
        if name in ("alltoall_base_", "alltoall_"):
            return "all_to_all", _nbytes(a[1]), a[2]
        if name in ("reduce_",):
            return "reduce", _nbytes(a[0]), a[1]
        return None
    if name in ("all_reduce", "all_reduce_", "all_reduce_coalesced", "all_reduce_coalesced_"):
        return "all_reduce", _nbytes(a[0]), a[-1]
    if name in ("all_gather_into_tensor", "all_gather_into_tensor_coalesced", "all_gather_into_tensor_out"):
        return "all_gather", _nbytes(a[0]) * int(a[1]), a[2]
    if name in ("reduce_scatter_tensor", "reduce_scatter_tensor_coalesced"):
        return "reduce_scatter", _nbytes(a[0]), a[3]
    if name == "all_to_all_single":
        return "all_to_all", _nbytes(a[0]), a[3]
    if name in ("broadcast", "broadcast_"):
        return "broadcast", _nbytes(a[0]), a[2]
    return None


class ResizingStorageTracker(StorageTracker):
    """StorageTracker that also follows ``UntypedStorage.resize_`` (one life per sized period of a storage)."""

    def __init__(self):
        super().__init__()
        self.lives_of_key: dict[int, list[int]] = {}    # storage _cdata -> every life it had (sids)
        self._death_refs: dict[int, weakref.ref] = {}   # storage _cdata -> the storage object now at that address

    def _watch(self, storage: torch.UntypedStorage, key: int) -> None:
        """A storage's lives are forgotten by address when the storage object dies: the allocator reuses
        addresses, and a new storage at an old address is another storage (no lives of the old one)."""
        ref = self._death_refs.get(key)
        if ref is None or ref() is not storage:
            self._death_refs[key] = weakref.ref(storage, lambda r, key=key: self._died(key, r))

    def _died(self, key: int, ref) -> None:
        if self._death_refs.get(key) is ref:
            del self._death_refs[key]
            self.lives_of_key.pop(key, None)

    def track(self, tensor: torch.Tensor, op_index: int) -> bool:
        new = super().track(tensor, op_index)
        if new:
            storage = tensor.untyped_storage()
            self._watch(storage, storage._cdata)
            self.lives_of_key.setdefault(storage._cdata, []).append(len(self.lives) - 1)
        return new

    def resized(self, storage: torch.UntypedStorage, nbytes: int) -> None:
        key = storage._cdata
        sid = self._live_ids.get(key)
        if sid is not None:
            if self.lives[sid].nbytes == nbytes:
                return
            self._freed(key, sid)                       # the old size ends here
        self._watch(storage, key)
        if nbytes > 0:
            new = len(self.lives)
            self.lives.append(StorageLife(new, nbytes, self.op_index, self.phase, self.seq))
            self.seq += 1
            self._live_ids[key] = new
            self._refs[key] = weakref.ref(storage, lambda _ref, key=key, sid=new: self._freed(key, sid))
            self.lives_of_key.setdefault(key, []).append(new)

    def forget_dead(self) -> None:
        """Drop the lives that ended before the step (the wrappers' set-up transients, e.g. the full parameters
        FSDP shards, DDP's broadcast buffer): they are not part of the step. Live ones are renumbered."""
        keep = [life for life in self.lives if life.free_seq is None]
        renumber = {life.storage_id: i for i, life in enumerate(keep)}
        for i, life in enumerate(keep):
            life.storage_id = i
            life.alloc_index = -1
        self.lives = keep
        self._live_ids = {k: renumber[s] for k, s in self._live_ids.items() if s in renumber}
        for key, ref in list(self._refs.items()):
            storage = ref()
            sid = self._live_ids.get(key)
            if storage is None or sid is None:
                self._refs.pop(key, None)
                continue
            self._refs[key] = weakref.ref(storage, lambda _ref, key=key, sid=sid: self._freed(key, sid))
        self.lives_of_key = {k: [renumber[s] for s in v if s in renumber] for k, v in self.lives_of_key.items()}

    def sids_of(self, tensor: torch.Tensor) -> list[int]:
        storage = self._storage(tensor)
        return [] if storage is None else list(self.lives_of_key.get(storage._cdata, ()))


# what the tensors of FSDP's ops hold, for the memory categories (engine.tracing.assemble.StorageRoles):
# the all-gather buffers and the unsharded parameters copied out of them (split_with_sizes_copy's out=) hold
# parameters; the reduce-scatter's input (the unsharded gradients packed by chunk_cat) and output (the new
# sharded gradient) hold gradients
_ROLES = {"fsdp.all_gather_copy_in": MemoryCategory.WEIGHTS, "c10d._allgather_base_": MemoryCategory.WEIGHTS,
          "fsdp.split_with_sizes_copy": MemoryCategory.WEIGHTS,
          "fsdp.chunk_cat": MemoryCategory.GRADIENTS, "c10d._reduce_scatter_base_": MemoryCategory.GRADIENTS}


class DistributedRecorder(Recorder):
    def __init__(self, modules: ModuleStack, convention: str, fake_mode, cluster: FakeCluster,
                 moe_routing: str = "balanced", attention_flops: str = "full"):
        super().__init__(modules, convention, moe_routing, attention_flops)
        self.storage = ResizingStorageTracker()
        self.fake_mode = fake_mode
        self.cluster = cluster
        self.collectives: list[CollectiveCall] = []
        self.setup = False
        self.role_sids: dict[int, MemoryCategory] = {}    # storage life -> category, from the ops above
        self.resized_sids: set[int] = set()               # lives of storages FSDP grew in place (gathered params)

    def on_resize(self, storage, nbytes: int) -> None:
        if self.setup:
            return
        self.storage.resized(storage, nbytes)
        if nbytes:
            self.resized_sids.add(self.storage._live_ids[storage._cdata])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(issubclass(t, DTensor) for t in types):
            return NotImplemented
        if active_fake_mode() is not self.fake_mode:   # DTensor's global-shape propagation: not this rank's work
            return func(*args, **(kwargs or {}))
        if func is _WAIT:
            out = args[0]
            if not self.setup:
                self._record(func, args, kwargs or {}, out, self._module_path())
            return out
        if self.setup:
            out = func(*args, **(kwargs or {}))
            for t in _collect_tensors((out,), []):
                self.storage.track(t, -1)
            return out
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _record(self, func, args, kwargs, out, path: str) -> None:
        super()._record(func, args, kwargs, out, path)
        record = self.ops[-1]
        if record.kind is OpKind.COLLECTIVE:
            # timed on the interconnect (engine.distributed.comm), not as a kernel on the GPU's roofline
            record = self.ops[-1] = replace(record, launches_kernel=False)
            found = _collective(func, args, kwargs)
            if found is not None:
                kind, nbytes, group = found
                self.collectives.append(CollectiveCall(record.index, kind, nbytes, group_size(group),
                                                       self.cluster.label_of(group), self.phase, path))
        role = _ROLES.get(record.op.rsplit(".", 1)[0])
        if role is not None:
            for t in _collect_tensors((args, list(kwargs.values()), out), []):
                for sid in self.storage.sids_of(t):
                    self.role_sids.setdefault(sid, role)


__all__ = ["DistributedRecorder", "ResizingStorageTracker", "Phase"]
