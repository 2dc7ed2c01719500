"""Which module is running: a stack of module paths kept by global forward hooks.

torch's ModTracker/ModuleTracker keep a *set* of active fqns prefixed with the root class name; we need
the innermost module of each op, per-call output shapes and call counts, so we keep our own stack with
the same global hook API (removed on exit). Backward ops are attributed through their autograd node's
sequence number, mapped to the forward op that created it (see ``ForwardNodeMap``)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._pytree import tree_leaves


@dataclass
class ModuleCallStats:
    calls: int = 0
    output_shapes: tuple[tuple[int, ...], ...] = ()
    output_bytes: int = 0


@dataclass
class ModuleStack:
    """Module path of every module of ``root`` (first name in ``named_modules()`` order)."""

    root: torch.nn.Module
    paths: dict[int, str] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    input_shapes: list[tuple[int, ...] | None] = field(default_factory=list)  # first tensor arg, per stack entry
    stats: dict[str, ModuleCallStats] = field(default_factory=dict)
    failure_path: str | None = None    # innermost module whose forward raised
    recording: bool = True             # off while e.g. the loss is computed outside the model

    def __post_init__(self):
        self._by_path: dict[str, torch.nn.Module] = {}  # also keeps ids unique during the trace
        for path, module in self.root.named_modules():
            self.paths[id(module)] = path
            self._by_path[path] = module
        self._handles = []
        self._handling_at_entry: list[BaseException | None] = []

    @property
    def current(self) -> str | None:
        return self.stack[-1] if self.stack else None

    def module_at(self, path: str) -> torch.nn.Module | None:
        return self._by_path.get(path)

    def named_modules(self):
        """(path, module) of the root as it was when the stack was made: the paths every op is attributed to,
        whatever wrappers were put around modules since (checkpointing, FSDP)."""
        return iter(self._by_path.items())

    @property
    def current_input_shape(self) -> tuple[int, ...] | None:
        return self.input_shapes[-1] if self.input_shapes else None

    def __enter__(self) -> "ModuleStack":
        self._handles = [
            register_module_forward_pre_hook(self._pre),
            register_module_forward_hook(self._post, always_call=True),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _path_of(self, module: torch.nn.Module) -> str:
        path = self.paths.get(id(module))
        if path is None:  # a module built inside forward: attribute to whoever is running it
            path = self.stack[-1] if self.stack else ""
        return path

    def _pre(self, module, args) -> None:
        self.stack.append(self._path_of(module))
        first = args[0] if args else None
        self.input_shapes.append(tuple(first.shape) if isinstance(first, torch.Tensor) else None)
        self._handling_at_entry.append(sys.exc_info()[1])  # forward may run inside an except block

    def _post(self, module, args, output) -> None:
        path = self.stack.pop() if self.stack else self._path_of(module)
        if self.input_shapes:
            self.input_shapes.pop()
        handling_at_entry = self._handling_at_entry.pop() if self._handling_at_entry else None
        raised = sys.exc_info()[1]
        if raised is not None and raised is not handling_at_entry:  # always_call: forward raised
            if self.failure_path is None:
                self.failure_path = path
            return
        if not self.recording or id(module) not in self.paths:
            return
        tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        stats = self.stats.setdefault(path, ModuleCallStats())
        stats.calls += 1
        stats.output_shapes = tuple(tuple(t.shape) for t in tensors)
        stats.output_bytes += sum(t.numel() * t.element_size() for t in tensors)  # every call


class ForwardNodeMap:
    """autograd node sequence number -> (module path) of the forward op that created the node.

    While a forward op is dispatched, its autograd node was already built and took the sequence number
    just before ``_get_sequence_nr()``; the first op that sees a number owns it."""

    def __init__(self):
        self.owner: dict[int, str] = {}
        self.leaf_owner: dict[int, str] = {}   # id(parameter stand-in) -> module path, for AccumulateGrad

    def note_forward(self, path: str) -> None:
        self.owner.setdefault(torch.autograd._get_sequence_nr() - 1, path)

    def backward_path(self) -> str | None:
        node = torch._C._current_autograd_node()
        if node is None:
            return None
        variable = getattr(node, "variable", None)   # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            return self.leaf_owner.get(id(variable))
        return self.owner.get(node._sequence_nr())
