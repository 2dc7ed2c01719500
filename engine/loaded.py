"""What a model source gives the trace: the module built on meta, its default inputs and how to call it."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, ContextManager, Mapping

from torch import nn

from torchbudget.engine.inputs import InputSpec


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module                          # parameters and buffers on meta
    name: str
    default_inputs: tuple[InputSpec, ...]      # empty: no sensible default is known (user files)
    family: str                                # "classification", ..., "huggingface", "timm", "file"
    build_kwargs: Mapping[str, object] = field(default_factory=dict)  # what the builder was called with
    forward_kwargs: Mapping[str, object] = field(default_factory=dict)  # passed to forward (HF: use_cache=False)
    notes: tuple[str, ...] = ()                # what the trace's policies should say about the build
    # entered around the trace (engine.hf: transformers' fake-tensor decisions); yields a list of policy lines
    trace_context: Callable[[], ContextManager[list]] | None = None

    def __post_init__(self):
        object.__setattr__(self, "build_kwargs", MappingProxyType(dict(self.build_kwargs)))
        object.__setattr__(self, "forward_kwargs", MappingProxyType(dict(self.forward_kwargs)))
