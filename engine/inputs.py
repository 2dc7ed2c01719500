"""Input specifications: shape + dtype, parsed from strings such as ``1x3x224x224`` or ``1x128:int64``."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine.errors import InputSpecError
from torchbudget.engine.vocab import DTYPE_ALIASES, FLOATING_DTYPES, canonical_dtype, input_kind  # noqa: F401

# bytes per element of each canonical dtype (torch-free, like engine.vocab's tables)
ELEMENT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
                 "int8": 1, "uint8": 1, "bool": 1}
# torch sizes a storage in a signed 64-bit byte count: a larger tensor cannot exist, not even as a fake
# one (its meta kernel raises "Storage size calculation overflowed").
MAX_TENSOR_BYTES = 2**63 - 1
# no model takes more; the limit keeps a typo of 10,000 'x1' from making a 10,000-dimension tensor
MAX_DIMS = 64
_MAX_DIGITS = len(str(MAX_TENSOR_BYTES))


def check_shape(shape: tuple[int, ...], dtype: str, label: str) -> None:
    """InputSpecError unless ``shape`` is a tensor torch can hold: whole dimensions >= 0, at most MAX_DIMS
    of them, numel x element size <= MAX_TENSOR_BYTES. ``label`` names the input in the message."""
    if len(shape) > MAX_DIMS:
        raise InputSpecError(f"input {label} has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    numel = 1
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise InputSpecError(f"input {label}: dimension {d!r} is not a whole number >= 0")
        numel *= d
    nbytes = numel * ELEMENT_BYTES.get(dtype, 8)
    if nbytes > MAX_TENSOR_BYTES:
        raise InputSpecError(f"input {label} is too large: {numel:.3g} elements of {dtype} would take {nbytes:.3g} "
                             f"bytes, and a tensor holds at most 2**63 - 1 bytes (8 EiB)")


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

    def __post_init__(self):
        check_shape(self.shape, self.dtype, _short(self.text() if len(self.shape) <= MAX_DIMS else repr(self.shape)))

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
    parts = [p.strip() for p in raw.lower().replace("×", "x").split("x")]
    # ASCII digits only: int() would also take '1_000', '+5' and other scripts' digits
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise InputSpecError(f"malformed input shape {_short(text)}: expected dimensions separated by 'x', "
                             "e.g. 1x3x224x224 or 1x128:int64")
    if len(parts) > MAX_DIMS:
        raise InputSpecError(f"input {_short(text)} has {len(parts)} dimensions; at most {MAX_DIMS} are supported")
    too_long = next((p for p in parts if len(p.lstrip("0")) > _MAX_DIGITS), None)
    if too_long is not None:   # also keeps int() clear of its 4300-digit limit
        raise InputSpecError(f"input {_short(text)}: dimension {_short(too_long)} is too large "
                             f"(a tensor holds at most 2**63 - 1 bytes)")
    shape = tuple(int(p) for p in parts)
    if any(d <= 0 for d in shape):
        raise InputSpecError(f"malformed input shape {_short(text)}: every dimension must be a positive integer")
    check_shape(shape, dtype, _short(text))
    return InputSpec(shape, dtype, name)


def _short(text: str, limit: int = 60) -> str:
    """Quoted, and cut to fit in a one-line message."""
    return repr(text) if len(text) <= limit else repr(text[:limit - 3] + "...")


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
