"""The fake process group a distributed trace runs in, and the three things torch needs told to run on it.

A process group is process-global state: ``fake_cluster`` creates it (torch's ``fake`` backend: every
collective returns at once, no data moves) with its device mesh, and destroys it in ``finally``, so nothing is
left behind for the GUI, the tests or the next trace (also ``sys.excepthook``, which ``init_process_group`` wraps
to prefix tracebacks with ``[rank0]:`` and ``destroy_process_group`` leaves: one more prefix per trace); the
caller holds engine.trace's trace lock. A process that already has a process group of its own (a real training
job, a notebook) is refused rather than disturbed.

While the session is open (and only then):

* DTensor's sharding propagation gets a FakeTensorMode of its own. It computes each output's *global* metadata by
  running the op on global-shaped fake tensors in whatever fake mode is active, which is ours, so those shadow ops
  would look like real allocations of the full tensor. In an eager program it makes a fresh mode; so do we, which
  is also what lets torch's FSDPMemTracker (and our recorder) tell them apart by their fake mode.
* DDP's constructor check that every rank has the same parameter shapes (it reads tensor data; with one rank in
  the process there is nothing to compare) is skipped.
* ``UntypedStorage.resize_`` is reported to the recorder: FSDP2 frees a gathered parameter by resizing its
  storage to 0 bytes and re-gathers into the same storage (as torch's MemTracker also watches)."""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from torchbudget.engine.errors import UserError


@dataclass
class FakeCluster:
    world_size: int
    tp_size: int
    mesh: object = None                     # DeviceMesh: ("dp",) or ("tp",) or ("dp", "tp")
    group_labels: dict[str, str] = field(default_factory=dict)      # process-group name -> "world" | "dp" | "tp"
    group_ranks: dict[str, tuple[int, ...]] = field(default_factory=dict)   # label -> rank 0's group
    resize_listener: object = None          # called as listener(storage, new_nbytes) before each resize_

    @property
    def dp_size(self) -> int:
        return self.world_size // self.tp_size

    def submesh(self, name: str):
        return self.mesh[name] if self.mesh is not None and self.mesh.ndim > 1 else self.mesh

    def label_of(self, group) -> str:
        """'world', 'dp' or 'tp' for a process group (a ProcessGroup, its boxed ScriptObject or its name)."""
        name = group if isinstance(group, str) else getattr(_unboxed(group), "group_name", None)
        return self.group_labels.get(name, "world")


def _unboxed(group):
    if isinstance(group, torch.ScriptObject):
        try:
            return dist.ProcessGroup.unbox(group)
        except (RuntimeError, AttributeError):
            return group
    return group


def group_size(group) -> int:
    """The size of a process group given as c10d ops receive it (boxed), or by name (functional collectives)."""
    if isinstance(group, str):
        from torch.distributed.distributed_c10d import _resolve_process_group

        return _resolve_process_group(group).size()
    return int(_unboxed(group).size())


@contextlib.contextmanager
def fake_cluster(world_size: int, tp_size: int = 1, mesh_dims: tuple[str, ...] = ("dp",)):
    """A fake process group of ``world_size`` ranks (this process is rank 0) and a CPU device mesh with the named
    dimensions ("dp", "tp" or both: data-parallel outer, tensor-parallel inner, as torchtitan lays them out).
    Build it outside FakeTensorMode (the mesh reads its rank tensor)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise UserError("this process already has a torch.distributed process group; a distributed plan needs a "
                        "fake one of its own: run it in a fresh process", field="strategy")
    # init_process_group wraps sys.excepthook to prefix every line of an uncaught traceback with "[rank0]: "
    # (and destroy_process_group leaves it): each trace would add one more prefix in this process
    saved_excepthook = sys.excepthook
    try:
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    except BaseException:
        _restore_excepthook(saved_excepthook)
        raise
    cluster = FakeCluster(world_size, tp_size)
    try:
        with _patched(cluster):
            shape = {"dp": world_size // tp_size, "tp": tp_size}
            dims = tuple(d for d in mesh_dims if d in shape)
            if dims:
                cluster.mesh = init_device_mesh("cpu", tuple(shape[d] for d in dims), mesh_dim_names=dims)
            world = dist.group.WORLD
            cluster.group_labels[world.group_name] = "world"
            cluster.group_ranks["world"] = tuple(range(world_size))
            for d in dims:
                group = cluster.mesh.get_group(d)
                cluster.group_labels[group.group_name] = d
                cluster.group_ranks[d] = tuple(dist.get_process_group_ranks(group))
            yield cluster
    finally:
        try:
            dist.destroy_process_group()
        finally:
            _restore_excepthook(saved_excepthook)


def _restore_excepthook(saved) -> None:
    """Put back the hook a process group init found, if torch's rank-prefixing wrapper is what is there now (a
    hook someone else set meanwhile is theirs to keep)."""
    if getattr(sys.excepthook, "__name__", "") == "_distributed_excepthook":
        sys.excepthook = saved


@contextlib.contextmanager
def _patched(cluster: FakeCluster):
    import torch.distributed.tensor._sharding_prop as sharding_prop
    import torch.nn.parallel.distributed as ddp_module
    from torch._subclasses.fake_tensor import FakeTensorMode

    propagation_mode = FakeTensorMode(allow_non_fake_inputs=True)
    saved_detect = sharding_prop.detect_fake_mode
    saved_verify = ddp_module._verify_param_shape_across_processes
    saved_resize = torch.UntypedStorage.resize_

    def resize_(storage, size):
        listener = cluster.resize_listener
        if listener is not None:
            listener(storage, int(size))
        return saved_resize(storage, size)

    from torch.distributed.device_mesh import DeviceMesh
    from torch.utils._python_dispatch import _disable_current_modes

    saved_concatenate = DeviceMesh.__dict__.get("_concatenate")

    def concatenate(*args, **kwargs):
        with _disable_current_modes():   # FSDP + TP joins the meshes; their rank tensors are real, not fake
            return saved_concatenate.__func__(*args, **kwargs)

    if isinstance(saved_concatenate, staticmethod):
        DeviceMesh._concatenate = staticmethod(concatenate)
    sharding_prop.detect_fake_mode = lambda *args, **kwargs: propagation_mode
    ddp_module._verify_param_shape_across_processes = lambda *args, **kwargs: None
    torch.UntypedStorage.resize_ = resize_
    try:
        yield
    finally:
        torch.UntypedStorage.resize_ = saved_resize
        if isinstance(saved_concatenate, staticmethod):
            DeviceMesh._concatenate = saved_concatenate
        ddp_module._verify_param_shape_across_processes = saved_verify
        sharding_prop.detect_fake_mode = saved_detect
