"""Storage lifetimes: alloc when an op first produces a storage, free when its last reference dies.

Like torch.distributed._tools.mem_tracker, a weakref callback on the untyped storage notices the free
(storages keep their Python object for as long as the C++ storage lives). Views and in-place ops
return an already-known storage and allocate nothing."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from torchbudget.engine.results import Phase


@dataclass
class StorageLife:
    storage_id: int
    nbytes: int
    alloc_index: int        # op index the storage appeared after (-1: before the first op)
    alloc_phase: Phase
    alloc_seq: int          # position in the chronological event log
    free_index: int | None = None
    free_phase: Phase | None = None
    free_seq: int | None = None


class StorageTracker:
    def __init__(self):
        self.lives: list[StorageLife] = []
        self._live_ids: dict[int, int] = {}          # storage _cdata -> storage_id, while alive
        self._refs: dict[int, weakref.ref] = {}
        self.op_index = -1                           # index of the last recorded op
        self.phase = Phase.FORWARD
        self.seq = 0                                 # chronological event counter

    @staticmethod
    def _storage(tensor: torch.Tensor):
        try:
            return tensor.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):  # sparse / nested / opaque tensors
            return None

    def storage_id(self, tensor: torch.Tensor) -> int | None:
        storage = self._storage(tensor)
        return None if storage is None else self._live_ids.get(storage._cdata)

    def track(self, tensor: torch.Tensor, op_index: int) -> bool:
        """Register the tensor's storage if it is new; True when it was."""
        storage = self._storage(tensor)
        if storage is None:
            return False
        key = storage._cdata
        if key in self._live_ids:
            return False
        sid = len(self.lives)
        self.lives.append(StorageLife(sid, storage.nbytes(), op_index, self.phase, self.seq))
        self.seq += 1
        self._live_ids[key] = sid
        self._refs[key] = weakref.ref(storage, lambda _ref, key=key, sid=sid: self._freed(key, sid))
        return True

    def _freed(self, key: int, sid: int) -> None:
        if self._live_ids.get(key) == sid:
            del self._live_ids[key]
            self._refs.pop(key, None)
        life = self.lives[sid]
        if life.free_index is None:
            life.free_index = self.op_index
            life.free_phase = self.phase
            life.free_seq = self.seq
            self.seq += 1

    def close(self) -> None:
        """Stop listening: storages dying after the trace are not part of it."""
        self._refs.clear()
        self._live_ids.clear()
