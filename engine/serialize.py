"""AnalysisResult <-> plain JSON-ready dicts. Used for ``--json`` and by the GUI to receive results
from the subprocess that runs user ``.py`` files. With ops and storage events included the
round trip is exact (the default: the planner needs both); without them (``--json`` leaves them out unless
asked, they can be large) those tuples come back empty."""
from __future__ import annotations

import collections.abc
import dataclasses
import typing
from enum import Enum
from functools import lru_cache
from types import MappingProxyType, NoneType, UnionType

from torchbudget.engine.errors import UserError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import (AnalysisResult, DistributedInfo, ModuleNode, OpRecord, StorageEvent,
                                        TraceOptions, Totals, UncountedOp, frozen_map)

ANALYSIS_FORMAT = "torchbudget-analysis/1"


class ResultFormatError(UserError):
    field = "file"


def result_to_dict(result: AnalysisResult, *, include_ops: bool = True, include_events: bool = True) -> dict:
    data = {
        "format": ANALYSIS_FORMAT,
        "model": result.model_name,
        "inputs": [to_plain(spec) for spec in result.inputs],
        "options": to_plain(result.options),
        "totals": to_plain(result.totals),
        "layers": [to_plain(node) for node in result.modules],
        "uncounted_ops": [to_plain(op) for op in result.uncounted_ops],
        "coverage": result.coverage,
        "flop_coverage": result.flop_coverage,
        "target_dependent": result.target_dependent,
        "warnings": list(result.warnings),
        "policies": list(result.policies),
        "trace_seconds": result.trace_seconds,
    }
    if result.distributed is not None:   # several GPUs: rank 0's collectives and groups (engine.distributed)
        data["distributed"] = to_plain(result.distributed)
    if include_ops:
        data["ops"] = [to_plain(op) for op in result.ops]
    if include_events:
        data["storage_events"] = [to_plain(event) for event in result.storage_events]
    return data


def result_from_dict(data: dict) -> AnalysisResult:
    if not isinstance(data, dict) or data.get("format") != ANALYSIS_FORMAT:
        raise ResultFormatError(f"not a TorchBudget analysis (expected format {ANALYSIS_FORMAT!r})")
    try:
        return AnalysisResult(
            model_name=data["model"],
            inputs=tuple(_decode(InputSpec, spec) for spec in data["inputs"]),
            options=_decode(TraceOptions, data["options"]),
            totals=_decode(Totals, data["totals"]),
            modules=tuple(_decode(ModuleNode, node) for node in data["layers"]),
            ops=tuple(_decode(OpRecord, op) for op in data.get("ops", ())),
            storage_events=tuple(_decode(StorageEvent, event) for event in data.get("storage_events", ())),
            uncounted_ops=tuple(_decode(UncountedOp, op) for op in data["uncounted_ops"]),
            coverage=float(data["coverage"]),
            flop_coverage=float(data.get("flop_coverage", 1.0)),
            target_dependent=bool(data.get("target_dependent", True)),
            warnings=tuple(data.get("warnings", ())),
            policies=tuple(data.get("policies", ())),
            trace_seconds=float(data.get("trace_seconds", 0.0)),
            distributed=_decode(DistributedInfo, data["distributed"]) if data.get("distributed") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultFormatError(f"malformed TorchBudget analysis: {type(exc).__name__}: {exc}") from None


def to_plain(value):
    """Dataclasses, enums, mappings and tuples -> plain dicts, lists and scalars (JSON-ready)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (dict, MappingProxyType)):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def from_plain(cls, value):
    """The inverse of ``to_plain`` for a dataclass type (nested dataclasses, enums, tuples, mappings)."""
    return _decode(cls, value)


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _decode(annotation, value):
    """Rebuild a value from its JSON form, guided by the dataclass annotations."""
    if isinstance(annotation, type) and issubclass(annotation, Enum):   # before is_dataclass: its hasattr
        return annotation(value)                                        # on an Enum class is slow
    if dataclasses.is_dataclass(annotation):
        hints = _hints(annotation)
        known = {f.name for f in dataclasses.fields(annotation)}
        return annotation(**{k: _decode(hints[k], v) for k, v in value.items() if k in known})
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, UnionType):
        if value is None and NoneType in args:
            return None
        return _decode(next(a for a in args if a is not NoneType), value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value))
    if annotation is tuple:
        return tuple(value)
    if origin in (collections.abc.Mapping, dict) or annotation in (typing.Mapping, dict):
        value_type = args[1] if len(args) == 2 else typing.Any
        return frozen_map({k: _decode(value_type, v) for k, v in value.items()})
    if annotation is float:
        return float(value)
    return value
