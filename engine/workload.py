"""What the user asks about: a model, its inputs and how it runs. Saved as JSON workload files (never pickle)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.inputs import InputSpec, parse_input
from torchbudget.engine.results import TraceOptions

WORKLOAD_FORMAT = "torchbudget-workload/1"


@dataclass(frozen=True)
class Workload:
    model: str                                   # torchvision name ("resnet50") or "path/to/file.py:Name"
    inputs: tuple[InputSpec, ...] = ()           # empty: the model's default input
    options: TraceOptions = TraceOptions()
    model_kwargs: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))

    @property
    def batch_size(self) -> int:
        return self.inputs[0].shape[0] if self.inputs else 1

    def with_batch(self, batch: int) -> "Workload":
        if batch < 1:
            raise InputSpecError(f"batch size must be at least 1, got {batch}")
        return replace(self, inputs=tuple(s.with_batch(batch) for s in self.inputs))

    def with_resolution(self, height: int, width: int) -> "Workload":
        """Resize every input with spatial dimensions (rank >= 3)."""
        return replace(self, inputs=tuple(s.with_resolution(height, width) if len(s.shape) >= 3 else s
                                          for s in self.inputs))

    def with_options(self, **changes) -> "Workload":
        return replace(self, options=replace(self.options, **changes))

    def key(self) -> tuple:
        """Hashable identity for caches."""
        return (self.model, self.inputs, self.options, tuple(sorted((k, repr(v)) for k, v in self.model_kwargs.items())))

    def to_dict(self) -> dict:
        o = self.options
        return {
            "format": WORKLOAD_FORMAT,
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "inputs": [s.text() for s in self.inputs],
            "mode": o.mode, "precision": o.precision, "optimizer": o.optimizer,
            "checkpointing": o.checkpointing, "convention": o.convention,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Workload":
        if not isinstance(data, dict) or data.get("format") != WORKLOAD_FORMAT:
            raise UserError(f"not a TorchBudget workload file (expected format {WORKLOAD_FORMAT!r})", field="file")
        try:
            options = TraceOptions(
                mode=data.get("mode", "infer"), precision=data.get("precision", "fp32"),
                optimizer=data.get("optimizer", "adamw"), checkpointing=bool(data.get("checkpointing", False)),
                convention=data.get("convention", "default"),
            )
            return cls(str(data["model"]), tuple(parse_input(t) for t in data.get("inputs", [])),
                       options, dict(data.get("model_kwargs") or {}))
        except KeyError as exc:
            raise UserError(f"workload file lacks the field {exc.args[0]!r}", field="file") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Workload":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UserError(f"workload file is not valid JSON: {exc}", field="file") from None
