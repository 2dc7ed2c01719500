"""What the user asks about: a model, its inputs and how it runs. Saved as JSON workload files (never pickle)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Mapping

from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.inputs import InputSpec, parse_input
from torchbudget.engine.results import TraceOptions
from torchbudget.engine import vocab
from torchbudget.engine.vocab import InputKind

WORKLOAD_FORMAT = "torchbudget-workload/1"
DECODER_PREFIX = "decoder_"   # an encoder-decoder's target inputs (Hugging Face's decoder_input_ids...)


@dataclass(frozen=True)
class Workload:
    model: str                                   # torchvision name ("resnet50") or "path/to/file.py:Name"
    inputs: tuple[InputSpec, ...] = ()           # empty: the model's default input
    options: TraceOptions = TraceOptions()
    model_kwargs: Mapping[str, object] = field(default_factory=dict)
    forward_kwargs: Mapping[str, object] = field(default_factory=dict)   # non-tensor forward() arguments

    def __post_init__(self):
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))
        object.__setattr__(self, "forward_kwargs", MappingProxyType(dict(self.forward_kwargs)))

    @property
    def batch_size(self) -> int:
        return self.inputs[0].shape[0] if self.inputs else 1

    def with_batch(self, batch: int) -> "Workload":
        if batch < 1:
            raise InputSpecError(f"batch size must be at least 1, got {batch}")
        return replace(self, inputs=tuple(s.with_batch(batch) for s in self.inputs))

    def with_resolution(self, height: int, width: int) -> "Workload":
        """Resize every image input (engine.vocab.InputKind.IMAGE: its last two dimensions)."""
        return replace(self, inputs=tuple(s.with_resolution(height, width) if s.kind is InputKind.IMAGE else s
                                          for s in self.inputs))

    def _sequence_inputs(self, target: bool = False) -> list[int]:
        """Indices of the token inputs (engine.vocab.InputKind.TOKENS: ids, masks) on the sequence axis: all of
        them, except an encoder-decoder's target tokens (named ``decoder_*``, as Hugging Face names them) beside
        its encoder's; ``target``: those target tokens."""
        tokens = [i for i, s in enumerate(self.inputs) if s.kind is InputKind.TOKENS]
        decoder = [i for i in tokens if (self.inputs[i].name or "").startswith(DECODER_PREFIX)]
        if target:
            return decoder
        return [i for i in tokens if i not in decoder] or decoder

    @property
    def seq_len(self) -> int | None:
        """The sequence length of the token inputs (None without one)."""
        tokens = self._sequence_inputs()
        return self.inputs[tokens[0]].shape[1] if tokens else None

    def with_seq_len(self, length: int) -> "Workload":
        """Every token input on the sequence axis (ids, masks; an encoder-decoder's encoder tokens) at ``length``
        positions."""
        return self._with_length(self._sequence_inputs(), length, "sequence length")

    @property
    def target_len(self) -> int | None:
        """An encoder-decoder's target length (its ``decoder_*`` token inputs; None without them)."""
        tokens = self._sequence_inputs(target=True)
        return self.inputs[tokens[0]].shape[1] if tokens else None

    def with_target_len(self, length: int) -> "Workload":
        """An encoder-decoder's target tokens (``decoder_input_ids``...) at ``length`` positions."""
        return self._with_length(self._sequence_inputs(target=True), length, "target length")

    def _with_length(self, indices: list[int], length: int, what: str) -> "Workload":
        if length < 1:
            raise InputSpecError(f"{what} must be at least 1, got {length}")
        return replace(self, inputs=tuple(InputSpec((s.shape[0], length), s.dtype, s.name) if i in indices else s
                                          for i, s in enumerate(self.inputs)))

    @property
    def input_kind(self) -> InputKind:
        """IMAGE when any input is an image (it has a resolution), else the first input's kind."""
        kinds = [s.kind for s in self.inputs]
        return InputKind.IMAGE if InputKind.IMAGE in kinds else (kinds[0] if kinds else InputKind.GENERIC)

    def on_gpu(self, gpu) -> "Workload":
        """This workload traced for ``gpu``'s kernels (a GpuSpec: its compute capability and vendor)."""
        target = vocab.target_for_capability(gpu.compute_capability, gpu.vendor)
        return self if target == self.options.target else self.with_options(target=target)

    def with_options(self, **changes) -> "Workload":
        return replace(self, options=replace(self.options, **changes))

    def key(self) -> tuple:
        """Hashable identity for caches: (model, inputs, options, keyword arguments)."""
        return (self.model, self.inputs, self.options,
                (tuple(sorted((k, repr(v)) for k, v in self.model_kwargs.items())),
                 tuple(sorted((k, repr(v)) for k, v in self.forward_kwargs.items()))))

    def to_dict(self) -> dict:
        """Every field (the options' too, by name): ``from_dict(to_dict(w)) == w`` for every workload."""
        return {"format": WORKLOAD_FORMAT, "model": self.model, "model_kwargs": dict(self.model_kwargs),
                "forward_kwargs": dict(self.forward_kwargs), "inputs": [s.text() for s in self.inputs],
                **{f.name: (list(v) if isinstance(v := getattr(self.options, f.name), tuple) else v)
                   for f in fields(TraceOptions)}}

    @classmethod
    def from_dict(cls, data: dict) -> "Workload":
        """A workload read from a file: every field is type-checked and every value normalised by
        engine.vocab; a problem is one UserError naming the field (never a silent default)."""
        if not isinstance(data, dict) or data.get("format") != WORKLOAD_FORMAT:
            raise UserError(f"not a TorchBudget workload file (expected format {WORKLOAD_FORMAT!r})", field="file")
        unknown = sorted(set(data) - _FILE_KEYS)
        if unknown:
            raise UserError(f"workload file has unknown field(s) {', '.join(map(repr, unknown))}", field="file")
        model = data.get("model")
        if not isinstance(model, str) or not model.strip():
            raise UserError("workload file: 'model' must be a model name or path/to/file.py:Name", field="file")
        inputs = data.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            raise UserError("workload file: 'inputs' must be a list of shape strings such as \"1x3x224x224\", "
                            f"not {_short(inputs)}", field="file")
        for name in ("model_kwargs", "forward_kwargs"):
            if not isinstance(data.get(name) or {}, dict):
                raise UserError(f"workload file: {name!r} must be an object such as {{\"num_classes\": 10}}, "
                                f"not {_short(data[name])}", field="file")
        values = {}
        for f in fields(TraceOptions):
            if f.name in data:
                values[f.name] = _checked_option(f.name, data[f.name], getattr(TraceOptions(), f.name))
        try:
            return cls(model.strip(), tuple(parse_input(t) for t in inputs), TraceOptions(**values),
                       data.get("model_kwargs") or {}, data.get("forward_kwargs") or {})
        except UserError as exc:
            raise UserError(f"workload file: {exc}", field="file") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Workload":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"workload file is not valid JSON: {exc}", field="file") from None
        except RecursionError:
            raise UserError("workload file nests too deeply to be a workload", field="file") from None
        return cls.from_dict(data)


_FILE_KEYS = frozenset({"format", "model", "model_kwargs", "forward_kwargs", "inputs",
                        *(f.name for f in fields(TraceOptions))})


def _checked_option(name: str, value, default):
    """A TraceOptions value from a file, type-checked against the field's default (its kind)."""
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, tuple):
        ok, kind = isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of strings"
        value = tuple(value) if ok else value
    else:   # str, or str | None (optimizer)
        ok, kind = isinstance(value, str) or (value is None and name == "optimizer"), "a string"
    if not ok:
        raise UserError(f"workload file: {name!r} must be {kind}, not {_short(value)}", field="file")
    return value


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
