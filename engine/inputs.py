"""Input specifications: shape + dtype, parsed from strings such as ``1x3x224x224`` or ``1x128:int64``."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine.errors import InputSpecError
from torchbudget.engine.vocab import DTYPE_ALIASES, FLOATING_DTYPES, canonical_dtype, input_kind  # noqa: F401

def dtype_from_name(name: str):
    """'fp16' -> torch.float16 (imports torch)."""
    import torch

    return getattr(torch, canonical_dtype(name))


def dtype_name(dtype) -> str:
    """torch.float32 -> 'float32'."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its shape, dtype name (``float32``, ``int64``...) and, for dict inputs, its key."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    name: str | None = None

    @property
    def torch_dtype(self):
        return dtype_from_name(self.dtype)

    @property
    def is_floating(self) -> bool:
        return canonical_dtype(self.dtype) in FLOATING_DTYPES

    @property
    def kind(self):
        """engine.vocab.InputKind: image, tokens or generic."""
        return input_kind(self.shape, self.dtype)

    def with_batch(self, batch: int) -> "InputSpec":
        return InputSpec((batch, *self.shape[1:]), self.dtype, self.name)

    def with_resolution(self, height: int, width: int) -> "InputSpec":
        if len(self.shape) < 3:
            raise InputSpecError(f"input {self.text()} has no spatial dimensions to resize")
        return InputSpec((*self.shape[:-2], height, width), self.dtype, self.name)

    def text(self) -> str:
        core = "x".join(str(d) for d in self.shape)
        if self.dtype != "float32":
            core += f":{self.dtype}"
        return f"{self.name}={core}" if self.name else core


def parse_input(text: str) -> InputSpec:
    """``[name=]DxDx...[:dtype]`` -> InputSpec."""
    raw = text.strip()
    name = None
    if "=" in raw:
        name, raw = (part.strip() for part in raw.split("=", 1))
        if not name.isidentifier():
            raise InputSpecError(f"input name {name!r} in {text!r} is not a valid identifier")
    dtype = "float32"
    if ":" in raw:
        raw, dtype_text = raw.split(":", 1)
        dtype = canonical_dtype(dtype_text)
    parts = raw.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise InputSpecError(
            f"malformed input shape {text!r}: expected dimensions separated by 'x', e.g. 1x3x224x224 or 1x128:int64"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise InputSpecError(f"malformed input shape {text!r}: every dimension must be a positive integer")
    return InputSpec(shape, dtype, name)


def parse_inputs(text: str | list[str] | tuple[str, ...]) -> tuple[InputSpec, ...]:
    """Several inputs separated by ',' or ';' (or given as a list). Named inputs form a dict input."""
    items = [text] if isinstance(text, str) else list(text)
    pieces = [p for item in items for p in item.replace(";", ",").split(",") if p.strip()]
    if not pieces:
        raise InputSpecError("no input shape given; e.g. --input 1x3x224x224")
    specs = tuple(parse_input(p) for p in pieces)
    named = [s.name is not None for s in specs]
    if any(named) and not all(named):
        raise InputSpecError("either name every input (ids=1x128:int64,mask=1x128:int64) or none")
    return specs
