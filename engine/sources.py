"""Where models come from: every torchvision model by name, or a user file ``path/to/file.py:Name``.
Models are built with parameters and buffers on meta (no weights are ever downloaded or initialised)."""
from __future__ import annotations

import difflib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Mapping

import torchvision.models as tvm
from torch import nn

from torchbudget.engine.errors import ModelLoadError, UnknownModelError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.meta_init import build_on_meta

# torchvision sub-packages and the family their models belong to (classification is the top level)
_FAMILY_MODULES = (
    ("classification", tvm),
    ("segmentation", tvm.segmentation),
    ("detection", tvm.detection),
    ("video", tvm.video),
    ("optical_flow", tvm.optical_flow),
    ("quantization", tvm.quantization),
)
VIDEO_FRAMES = 16
OPTICAL_FLOW_SIZE = (360, 640)     # RAFT needs sides divisible by 8
DETECTION_SIZE = (480, 640)        # detection models resize internally; one image per batch element
FILE_SPEC_SEPARATOR = ":"


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module                          # parameters and buffers on meta
    name: str
    default_inputs: tuple[InputSpec, ...]      # empty: no sensible default is known (user files)
    family: str                                # "classification", "segmentation", ..., "file"
    build_kwargs: Mapping[str, object] = field(default_factory=dict)  # what the builder was called with

    def __post_init__(self):
        object.__setattr__(self, "build_kwargs", MappingProxyType(dict(self.build_kwargs)))


@lru_cache(maxsize=1)
def _torchvision_families() -> dict[str, str]:
    families: dict[str, str] = {}
    for family, module in _FAMILY_MODULES:
        for name in tvm.list_models(module=module):
            families.setdefault(name, family)
    return families


def list_model_names() -> list[str]:
    """Every torchvision model name TorchBudget can build, sorted."""
    return sorted(_torchvision_families())


def model_family(name: str) -> str | None:
    return _torchvision_families().get(name)


def is_file_spec(spec: str) -> bool:
    path_part = spec.rsplit(FILE_SPEC_SEPARATOR, 1)[0] if _has_attribute_part(spec) else spec
    return path_part.endswith(".py")


def _has_attribute_part(spec: str) -> bool:
    head, sep, tail = spec.rpartition(FILE_SPEC_SEPARATOR)
    return bool(sep) and head.endswith(".py") and tail.isidentifier()


def load_model(spec: str, model_kwargs: Mapping | None = None) -> LoadedModel:
    """``resnet50`` or ``path/to/file.py:Name`` -> a model on meta with its default inputs."""
    spec = spec.strip()
    if not spec:
        raise UnknownModelError("no model given; name a torchvision model (e.g. resnet50) or path/to/file.py:Name")
    kwargs = dict(model_kwargs or {})
    if is_file_spec(spec):
        return _load_from_file(spec, kwargs)
    return _load_torchvision(spec, kwargs)


# ----------------------------------------------------------------------------------------- torchvision
def _load_torchvision(name: str, user_kwargs: dict) -> LoadedModel:
    family = model_family(name)
    if family is None:
        close = difflib.get_close_matches(name, list_model_names(), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `main.py analyze --list` for all names"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    build_kwargs: dict[str, object] = {"weights": None}  # never download weights
    if family in ("segmentation", "detection"):
        build_kwargs["weights_backbone"] = None
    if family == "quantization":
        build_kwargs["quantize"] = False  # the float model with quant stubs: quantized kernels do not trace
    build_kwargs.update(user_kwargs)
    try:
        module = build_on_meta(tvm.get_model, name, **build_kwargs)
    except Exception as exc:  # a bad kwarg, or a builder that rejects it
        raise ModelLoadError(f"building {name} failed: {type(exc).__name__}: {exc}") from exc
    return LoadedModel(module, name, _torchvision_default_inputs(name, family, module), family, build_kwargs)


def _weights_transform_kwargs(name: str) -> dict:
    """The DEFAULT weights' preprocessing settings (local metadata: nothing is downloaded)."""
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return {}
    return dict(getattr(weights.transforms, "keywords", None) or {})


def _pair(size, fallback: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return fallback
    if isinstance(size, int):
        return (size, size)
    size = tuple(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _torchvision_default_inputs(name: str, family: str, module: nn.Module) -> tuple[InputSpec, ...]:
    transform = _weights_transform_kwargs(name)
    if family == "segmentation":
        height, width = _pair(transform.get("resize_size"), (520, 520))
        return (InputSpec((1, 3, height, width)),)
    if family == "detection":
        return (InputSpec((1, 3, *DETECTION_SIZE)),)
    if family == "optical_flow":
        return (InputSpec((1, 3, *OPTICAL_FLOW_SIZE)), InputSpec((1, 3, *OPTICAL_FLOW_SIZE)))
    # a model built for a fixed size (ViT without weights is 224) beats the weights' crop size
    fixed = getattr(module, "image_size", None)
    height, width = _pair(fixed if isinstance(fixed, int) else transform.get("crop_size"), (224, 224))
    if family == "video":
        return (InputSpec((1, 3, VIDEO_FRAMES, height, width)),)
    return (InputSpec((1, 3, height, width)),)


# ------------------------------------------------------------------------------------------- user files
def _split_file_spec(spec: str) -> tuple[Path, str | None]:
    if _has_attribute_part(spec):
        path_text, attribute = spec.rsplit(FILE_SPEC_SEPARATOR, 1)
        return Path(path_text).expanduser(), attribute
    return Path(spec).expanduser(), None


def _where(exc: BaseException, path: Path) -> str:
    """``file.py:LINE`` of the innermost frame in the user's file (or the syntax error's line)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{path.name}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f"{path.name}:{frames[-1].lineno}" if frames else path.name


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist", field="file")
    module_name = f"torchbudget_user_{abs(hash(str(path.resolve())))}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise ModelLoadError(f"cannot import {str(path)!r} as a Python file", field="file")
    user_module = importlib.util.module_from_spec(import_spec)
    sys.path.insert(0, str(path.resolve().parent))  # let the file import its neighbours
    try:
        import_spec.loader.exec_module(user_module)
    except Exception as exc:
        raise ModelLoadError(f"importing {path.name} failed at {_where(exc, path)}: {type(exc).__name__}: {exc}",
                             field="file") from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    return user_module


def _module_classes(user_module: ModuleType) -> list[str]:
    return [n for n, obj in vars(user_module).items()
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == user_module.__name__]


def _load_from_file(spec: str, kwargs: dict) -> LoadedModel:
    path, attribute = _split_file_spec(spec)
    user_module = _import_file(path)
    if attribute is None:
        candidates = _module_classes(user_module)
        if len(candidates) != 1:
            found = ", ".join(candidates) or "none"
            raise ModelLoadError(f"name the model in {path.name} as {path}:Name (nn.Module classes found: {found})")
        attribute = candidates[0]
    factory = getattr(user_module, attribute, None)
    if factory is None:
        available = ", ".join(_module_classes(user_module)) or "no nn.Module classes"
        raise ModelLoadError(f"{path.name} has no attribute {attribute!r} (it defines {available})")
    if not callable(factory):
        raise ModelLoadError(f"{path.name}:{attribute} is a {type(factory).__name__}, not a class or factory")
    try:
        module = build_on_meta(factory, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"building {attribute} failed at {_where(exc, path)}: {type(exc).__name__}: {exc}") \
            from exc
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{path.name}:{attribute} returned a {type(module).__name__}, not a torch.nn.Module")
    declared = getattr(module, "example_input_shapes", None) or getattr(user_module, "EXAMPLE_INPUTS", None)
    return LoadedModel(module, attribute, guess_default_inputs(module, declared), "file", kwargs)


_CONV_SPATIAL = ((nn.Conv1d, (224,)), (nn.Conv2d, (224, 224)), (nn.Conv3d, (16, 112, 112)),
                 (nn.ConvTranspose2d, (32, 32)))


def guess_default_inputs(module: nn.Module, declared) -> tuple[InputSpec, ...]:
    """A file may declare ``EXAMPLE_INPUTS = "1x3x224x224"``; otherwise guess from the first layer."""
    from torchbudget.engine.inputs import parse_inputs

    if declared:
        return parse_inputs(declared)
    for leaf in module.modules():
        for conv_type, spatial in _CONV_SPATIAL:
            if isinstance(leaf, conv_type):
                return (InputSpec((1, leaf.in_channels, *spatial)),)
        if isinstance(leaf, nn.Linear):
            return (InputSpec((1, leaf.in_features)),)
        if isinstance(leaf, nn.Embedding):
            return (InputSpec((1, 128), "int64"),)
    return ()
