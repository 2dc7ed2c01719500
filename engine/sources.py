"""Where models come from: every torchvision model by name, Hugging Face architectures by hub id or alias
(bundled configs, engine.hf), a local ``config.json`` or model folder, timm names (``timm/NAME``, where timm is
installed), or a user file ``path/to/file.py:Name``. Models are built with parameters and buffers on meta (no
weights are ever downloaded, read or initialised)."""
from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Mapping

import torchvision.models as tvm
from torch import nn

from torchbudget.engine.errors import ModelLoadError, UnknownModelError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.loaded import LoadedModel  # noqa: F401 - its old home
from torchbudget.engine.meta_init import build_on_meta
from torchbudget.engine.user_code import (FILE_SPEC_SEPARATOR, is_file_spec, model_file_problem,  # noqa: F401
                                         report_stage, split_file_spec, system_exit_message, user_argv)

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


def model_groups() -> dict[str, list[str]]:
    """Every model name by where it comes from (``analyze --list``): torchvision, the bundled Hugging Face
    configs (hub ids; their aliases are in resources/hf_models.toml) and timm (``timm/NAME``, when installed)."""
    from torchbudget.engine import hf, hf_catalog

    return {"torchvision": list_model_names(),
            "huggingface": [m.hub_id for m in hf_catalog.bundled_models()],
            "timm": [f"{hf_catalog.TIMM_PREFIX}{name}" for name in hf.timm_names()]}


def model_family(name: str) -> str | None:
    return _torchvision_families().get(name)


def load_model(spec: str, model_kwargs: Mapping | None = None) -> LoadedModel:
    """``resnet50``, ``meta-llama/Llama-3.1-8B``, ``path/to/config.json``, ``timm/NAME`` or
    ``path/to/file.py:Name`` -> a model on meta with its default inputs."""
    spec = spec.strip()
    if not spec:
        raise UnknownModelError("no model given; name a torchvision model (e.g. resnet50) or path/to/file.py:Name")
    kwargs = dict(model_kwargs or {})
    if is_file_spec(spec):
        return _load_from_file(spec, kwargs)
    if model_family(spec) is not None:
        return _load_torchvision(spec, kwargs)
    from torchbudget.engine import hf, hf_catalog

    loaded = hf.load_hf(spec, kwargs)
    if loaded is None and hf_catalog.is_timm_name(spec):
        loaded = hf.load_timm(spec, kwargs)
        if loaded is None:
            why = "is not a timm model" if hf.timm_available() else "needs timm, which is not installed"
            close = hf.close_names(spec, [f"timm/{n}" for n in hf.timm_names()])
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownModelError(f"{_quoted(spec)} {why}{hint}")
    if loaded is not None:
        return loaded
    raise UnknownModelError(_unknown_model_message(spec))


def _unknown_model_message(spec: str) -> str:
    from torchbudget.engine import hf, hf_catalog

    if hf_catalog.looks_like_path(spec):
        return (f"{_quoted(spec)} does not exist (give a config.json, a model folder holding one, or a model name; "
                "see `main.py analyze --list`)")
    close = hf.close_names(spec, list_model_names() + hf_catalog.bundled_names())
    hint = f"; did you mean {', '.join(close)}?" if close else "; run `main.py analyze --list` for all names"
    if "/" in spec:   # a hub id: nothing is downloaded, so only bundled configs are known by name
        return (f"unknown model {_quoted(spec)}: not a bundled Hugging Face config (nothing is downloaded; give "
                f"path/to/config.json for others){hint}")
    return f"unknown model {_quoted(spec)}{hint}"


# ----------------------------------------------------------------------------------------- torchvision
def _load_torchvision(name: str, user_kwargs: dict) -> LoadedModel:
    family = model_family(name)
    if family is None:
        raise UnknownModelError(_unknown_model_message(name))
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
def _where(exc: BaseException, path: Path) -> str:
    """``file.py:LINE`` of the innermost frame in the user's file (or the syntax error's line)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{path.name}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f"{path.name}:{frames[-1].lineno}" if frames else path.name


def _import_file(path: Path) -> ModuleType:
    problem = model_file_problem(path)
    if problem:
        raise ModelLoadError(problem, field="file")
    module_name = f"torchbudget_user_{abs(hash(str(path.resolve())))}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise ModelLoadError(f"cannot import {str(path)!r} as a Python file", field="file")
    user_module = importlib.util.module_from_spec(import_spec)
    folder = path.resolve().parent
    _forget_siblings_of_other_folders(folder)
    before = set(sys.modules)
    sys.path.insert(0, str(folder))  # let the file import its neighbours
    report_stage(f"importing {path.name}")
    try:
        with user_argv(path):
            import_spec.loader.exec_module(user_module)
    except SystemExit as exc:   # sys.exit() at import must not end the caller's process
        raise ModelLoadError(system_exit_message(exc, f"importing {path.name}"), field="file") from None
    except Exception as exc:
        raise ModelLoadError(f"importing {path.name} failed at {_where(exc, path)}: {type(exc).__name__}: "
                             f"{_first_line(exc)}", field="file") from exc
    finally:
        sys.path.remove(str(folder))
        _note_siblings(folder, set(sys.modules) - before)
    return user_module


# Modules a model file imported from its own folder (its engine.py, helpers.py), by name -> folder. Python
# caches modules by name only: a second model file in another folder with its own engine.py would get the
# first one's, so they are forgotten when a file from another folder is imported (nothing else is touched:
# only modules whose file lies in a model file's folder are noted).
_SIBLINGS: dict[str, Path] = {}


def _note_siblings(folder: Path, names: set[str]) -> None:
    for name in names:
        origin = getattr(sys.modules.get(name), "__file__", None)
        if origin and Path(origin).resolve().is_relative_to(folder):
            _SIBLINGS[name] = folder


def _forget_siblings_of_other_folders(folder: Path) -> None:
    for name, owner in list(_SIBLINGS.items()):
        if owner != folder:
            sys.modules.pop(name, None)
            del _SIBLINGS[name]


def _module_classes(user_module: ModuleType) -> list[str]:
    return [n for n, obj in vars(user_module).items()
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == user_module.__name__]


def _load_from_file(spec: str, kwargs: dict) -> LoadedModel:
    path, attribute = split_file_spec(spec)
    user_module = _import_file(path)
    if attribute is None:
        candidates = _module_classes(user_module)
        if len(candidates) != 1:
            found = ", ".join(candidates) or "none"
            raise ModelLoadError(f"name the model in {path.name} as {path}:Name (nn.Module classes found: {found})")
        attribute = candidates[0]
    try:
        factory = getattr(user_module, attribute, None)
    except Exception as exc:  # noqa: BLE001 - a module-level __getattr__ in user code
        raise ModelLoadError(f"reading {attribute} from {path.name} failed: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc
    if factory is None:
        available = ", ".join(_module_classes(user_module)) or "no nn.Module classes"
        raise ModelLoadError(f"{path.name} has no attribute {attribute!r} (it defines {available})")
    if not callable(factory):
        raise ModelLoadError(f"{path.name}:{attribute} is a {type(factory).__name__}, not a class or factory")
    report_stage(f"building {attribute}")
    try:
        with user_argv(path):
            module = build_on_meta(factory, **kwargs)
    except SystemExit as exc:
        raise ModelLoadError(system_exit_message(exc, f"building {attribute}")) from None
    except Exception as exc:
        raise ModelLoadError(f"building {attribute} failed at {_where(exc, path)}: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{path.name}:{attribute} returned a {type(module).__name__}, not a torch.nn.Module")
    report_stage(f"tracing {attribute}")   # what user code runs next: its forward (and backward)
    declared = _declared_inputs(module, user_module, path)
    return LoadedModel(module, attribute, guess_default_inputs(module, declared), "file", kwargs)


def _quoted(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit - 3] + "...")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """An error message fit for one line: its first line, cut to ``limit`` characters."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _declared_inputs(module: nn.Module, user_module: ModuleType, path: Path):
    """``example_input_shapes`` on the model or ``EXAMPLE_INPUTS`` in the file: a shape string or a list of
    them; anything else is named as the file's mistake."""
    for owner, name in ((module, "example_input_shapes"), (user_module, "EXAMPLE_INPUTS")):
        try:
            declared = getattr(owner, name, None)
        except Exception as exc:  # noqa: BLE001 - a property in user code
            raise ModelLoadError(f"reading {name} of {path.name} failed: {type(exc).__name__}: {_first_line(exc)}") \
                from exc
        if not declared:
            continue
        if isinstance(declared, str) or (isinstance(declared, (list, tuple))
                                         and all(isinstance(item, str) for item in declared)):
            return declared
        raise ModelLoadError(f"{name} in {path.name} must be a shape string such as \"1x3x224x224\" (or a list of "
                             f"them), not a {type(declared).__name__}", field="input")
    return None


_CONV_SPATIAL = ((nn.Conv1d, (224,)), (nn.Conv2d, (224, 224)), (nn.Conv3d, (16, 112, 112)),
                 (nn.ConvTranspose2d, (32, 32)))


def guess_default_inputs(module: nn.Module, declared) -> tuple[InputSpec, ...]:
    """A file may declare ``EXAMPLE_INPUTS = "1x3x224x224"``; a model with a Hugging Face or diffusers style
    ``config`` gets inputs by meaning (engine.hf.default_inputs: its forward parameters sized from the config);
    otherwise guess from the first layer."""
    from torchbudget.engine.hf import default_inputs
    from torchbudget.engine.inputs import parse_inputs

    if declared:
        return parse_inputs(declared)
    by_meaning = default_inputs(module) if getattr(module, "config", None) is not None else ()
    if by_meaning:
        return by_meaning
    for leaf in module.modules():
        for conv_type, spatial in _CONV_SPATIAL:
            if isinstance(leaf, conv_type):
                return (InputSpec((1, leaf.in_channels, *spatial)),)
        if isinstance(leaf, nn.Linear):
            return (InputSpec((1, leaf.in_features)),)
        if isinstance(leaf, nn.Embedding):
            return (InputSpec((1, 128), "int64"),)
    return ()
