"""Hugging Face models built offline on meta: bundled configs by hub id or alias (resources/hf_models.toml),
a local ``config.json`` or model folder (the config only: weights are never read), and timm names (where timm
is installed). Default inputs come from the model's ``forward`` signature and its config ("inputs by meaning"):
token ids for text, ``pixel_values`` at the config's image size, Whisper's log-mel ``input_features``, decoder
ids for encoder-decoders, and diffusers-style ``sample``/``timestep``/``encoder_hidden_states``.

Attention runs through ``F.scaled_dot_product_attention`` (``attn_implementation="sdpa"``: the trace's CUDA
semantics pick the GPU's kernel); architectures transformers has no SDPA path for (Gemma-2's soft-capping)
run their eager attention, said in the result's policies. ``use_cache=False`` is passed to forward: a training
step or a plain forward keeps no KV cache (HF's default ``use_cache=True`` would return the prefill cache)."""
from __future__ import annotations

import contextlib
import difflib
import inspect
import json
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from torchbudget.engine import hf_catalog
from torchbudget.engine.errors import ModelLoadError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.loaded import LoadedModel
from torchbudget.engine.meta_init import build_on_meta

FAMILY = "huggingface"
TIMM_FAMILY = "timm"
DEFAULT_SEQ_LEN = 2048         # capped by the model's positions (BERT 512, GPT-2 1024, CLIP 77)
DEFAULT_TARGET_LEN = 128       # an encoder-decoder's target (decoder_input_ids), capped likewise
UNBOUNDED_SEQ_LEN = 512        # models without a position limit (T5's relative positions)
# the config fields that decide a model's size: a config.json lacking one would be built with the config
# class's default (LlamaConfig: hidden_size 4096), a different model, so it is named instead
SIZE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "n_embd", "n_layer", "n_head", "d_model", "d_ff", "d_kv", "num_layers", "num_heads",
               "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
               "encoder_ffn_dim", "decoder_ffn_dim", "num_mel_bins", "image_size", "patch_size")
_IMAGE_INPUTS = ("pixel_values",)
_DECODER_PREFIX = "decoder_"


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' config warnings (a rope field above a small --kwargs override...) stay out of the CLI's
    output; errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# ----------------------------------------------------------------------------------------------- names
def is_hf_spec(spec: str) -> bool:
    """A bundled name, or a config.json / model folder on disk."""
    return hf_catalog.find_bundled(spec) is not None or hf_catalog.local_config_path(spec) is not None


def close_names(spec: str, names: list[str], n: int = 5) -> list[str]:
    """Close matches, case-insensitively (hub ids are typed in any case), spelled as listed."""
    by_lower = {name.lower(): name for name in names}
    text = spec.strip().lower()[:200]
    candidates = difflib.get_close_matches(text, list(by_lower), n=n, cutoff=0.5)
    if "/" in text:   # a hub id: its last part against the aliases too (meta-llama/llama-3-8b ~ llama-3.1-8b)
        tail = text.rsplit("/", 1)[1]
        candidates += difflib.get_close_matches(tail, list(by_lower), n=n, cutoff=0.6)
    out: list[str] = []
    for name in candidates:
        if by_lower[name] not in out:
            out.append(by_lower[name])
    return out[:n]


# ------------------------------------------------------------------------------------------- building
def load_hf(spec: str, user_kwargs: Mapping):
    """A bundled name or a local config -> LoadedModel; None when ``spec`` is neither."""
    bundled = hf_catalog.find_bundled(spec)
    if bundled is not None:
        config_dict = dict(bundled.config)
        _check_overrides(config_dict, user_kwargs, bundled.hub_id)
        return _build(bundled.hub_id, bundled.architecture, hf_catalog._merged(config_dict, user_kwargs),
                      user_kwargs, where=bundled.hub_id)
    path = hf_catalog.local_config_path(spec)
    if path is None:
        return None
    config_dict = _read_config_json(path)
    _check_overrides(config_dict, user_kwargs, str(path))
    merged = hf_catalog._merged(config_dict, user_kwargs)
    architectures = merged.get("architectures") or []
    name = Path(spec.strip()).name if path.name == hf_catalog.CONFIG_FILE and Path(spec).is_dir() else str(path)
    return _build(name, architectures[0] if architectures else None, merged, user_kwargs, where=str(path))


def _read_config_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"{str(path.parent)!r} has no config.json (a model folder needs one; weights are never "
                             "read)", field="model")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {str(path)!r}: {exc}", field="model") from None
    except ValueError as exc:
        raise ModelLoadError(f"{str(path)!r} is not valid JSON: {exc}", field="model") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{str(path)!r} is not a config.json (expected a JSON object)", field="model")
    if not isinstance(data.get("model_type"), str) or not data["model_type"]:
        raise ModelLoadError(f"{str(path)!r} has no \"model_type\" (e.g. \"llama\"): transformers cannot tell which "
                             "architecture it describes", field="model")
    if data.get("auto_map"):
        raise ModelLoadError(f"{str(path)!r} needs the model's own code (\"auto_map\", trust_remote_code), which "
                             "TorchBudget does not run; only architectures transformers ships are built",
                             field="model")
    return data


def _config_class(model_type: str, where: str):
    from transformers import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[model_type]
    except KeyError:
        import transformers

        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(f"{where}: model_type {model_type!r} is not an architecture transformers "
                             f"{transformers.__version__} knows{hint}", field="model") from None


def _known_fields(config_class) -> set[str]:
    known = set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"}
    known |= set(getattr(config_class, "attribute_map", {}))
    known |= set(getattr(config_class, "attribute_map", {}).values())
    known |= {"num_labels", "id2label", "label2id", "rope_scaling", "rope_theta", "model_type", "architectures"}
    try:
        with _quiet_transformers():
            known |= set(config_class().to_dict())
    except Exception:  # noqa: BLE001 - a config class without usable defaults: its signature is enough
        pass
    return known


def _check_overrides(config_dict: dict, overrides: Mapping, where: str) -> None:
    """--kwargs for a Hugging Face model are config fields: a misspelt one is named, never set silently (a
    config takes any keyword and ignores what its model never reads)."""
    if not overrides:
        return
    config_class = _config_class(str(config_dict.get("model_type")), where)
    known = _known_fields(config_class) | set(config_dict)
    sub_configs = getattr(config_class, "sub_configs", {}) or {}
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.7)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelLoadError(f"--kwargs: {key!r} is not a {config_class.__name__} field{hint}", field="kwargs")
        if key in sub_configs and isinstance(value, Mapping):
            sub_known = _known_fields(sub_configs[key]) | set(config_dict.get(key) or {})
            for sub_key in value:
                if sub_key not in sub_known:
                    raise ModelLoadError(f"--kwargs: {key}.{sub_key!r} is not a {sub_configs[key].__name__} field",
                                         field="kwargs")


def _missing_sizes(config_dict: Mapping, config_class) -> list[str]:
    """The size fields the config class takes that ``config_dict`` does not give (under either spelling)."""
    aliases = getattr(config_class, "attribute_map", {}) or {}
    reverse = {v: k for k, v in aliases.items()}
    takes = set(inspect.signature(config_class.__init__).parameters)
    missing = []
    for name in SIZE_FIELDS:
        if name not in takes:
            continue
        spellings = {name, aliases.get(name), reverse.get(name)} - {None}
        if not spellings & set(config_dict):
            missing.append(name)
    return missing


def _check_sizes(config_dict: Mapping, config_class, where: str) -> None:
    missing = _missing_sizes(config_dict, config_class)
    for key, sub_class in (getattr(config_class, "sub_configs", {}) or {}).items():
        sub = config_dict.get(key)
        if not isinstance(sub, Mapping):
            missing.append(key)
        else:
            missing += [f"{key}.{name}" for name in _missing_sizes(sub, sub_class)]
    if missing:
        raise ModelLoadError(f"{where} lacks {', '.join(missing)}: transformers would fill "
                             f"{'it' if len(missing) == 1 else 'them'} with {config_class.__name__}'s defaults, a "
                             "different model; add the model's own values", field="model")


def _model_class(architecture: str | None, config, where: str):
    import transformers

    if architecture:
        cls = getattr(transformers, architecture, None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
            raise ModelLoadError(f"{where}: architecture {architecture!r} is not a model class of transformers "
                                 f"{transformers.__version__}", field="model")
        return cls
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    for mapping in (MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING):   # no "architectures": the LM, else the base
        try:
            return mapping[type(config)]
        except KeyError:
            continue
    raise ModelLoadError(f"{where}: no \"architectures\" entry and transformers has no model class for "
                         f"model_type {config.model_type!r}", field="model")


def _build(name: str, architecture: str | None, config_dict: dict, user_kwargs: Mapping, *, where: str):
    from transformers import AutoConfig

    fields = {k: v for k, v in config_dict.items() if k not in ("model_type", "transformers_version")}
    model_type = str(config_dict["model_type"])
    config_class = _config_class(model_type, where)
    _check_sizes(config_dict, config_class, where)
    try:
        with _quiet_transformers():
            config = AutoConfig.for_model(model_type, **fields)
    except Exception as exc:  # noqa: BLE001 - transformers' own validation of the numbers
        raise ModelLoadError(f"{where}: transformers rejected the config: {type(exc).__name__}: "
                             f"{_first_line(exc)}", field="model") from exc
    cls = _model_class(architecture, config, where)
    sdpa = bool(getattr(cls, "_supports_sdpa", False))
    notes = () if sdpa else (f"attention: {cls.__name__} has no SDPA path in transformers; its eager attention is "
                             "traced (scores and probabilities materialised, as a GPU run of it keeps them)",)
    try:
        with _quiet_transformers(), torch.device("meta"):
            module = cls._from_config(config, attn_implementation="sdpa" if sdpa else "eager",
                                      dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - the numbers do not make a model (heads not dividing the width)
        raise ModelLoadError(f"building {name} failed: {type(exc).__name__}: {_first_line(exc)}",
                             field="model") from exc
    forward = _forward_parameters(module)
    forward_kwargs = {"use_cache": False} if "use_cache" in forward else {}
    return LoadedModel(module, name, default_inputs(module, config), FAMILY, dict(user_kwargs),
                       forward_kwargs=forward_kwargs, notes=notes)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------- default inputs
def _forward_parameters(module: nn.Module) -> list[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _get(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None) if not isinstance(config, Mapping) else config.get(name)
        if value is not None:
            return value
    return default


def _side(size) -> tuple[int, int] | None:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (list, tuple)) and size and all(isinstance(s, int) for s in size):
        return (size[0], size[-1])
    return None


def _usable_positions(config) -> int | None:
    positions = _get(config, "max_position_embeddings")
    if getattr(config, "model_type", None) == "t5" or not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "model_type", "") in hf_catalog._OFFSET_POSITIONS:
        positions -= int(_get(config, "pad_token_id", default=1)) + 1
    return positions


def default_inputs(module: nn.Module, config=None) -> tuple[InputSpec, ...]:
    """The inputs a model is analysed at by default, named after its ``forward`` parameters and sized from its
    config: batch 1; ``input_ids`` of min(2048, positions) tokens; ``pixel_values`` 3 x image_size²;
    ``input_features`` num_mel_bins x (2 x max_source_positions) (Whisper: 80 x 3000); ``decoder_input_ids``
    of min(128, target positions) for encoder-decoders; ``sample``/``timestep``/``encoder_hidden_states`` for
    a diffusers-style UNet (in_channels x sample_size², 77 x cross_attention_dim). Empty when none applies."""
    config = config if config is not None else getattr(module, "config", None)
    if config is None:
        return ()
    forward = _forward_parameters(module)
    text = _get(config, "text_config") or config
    vision = _get(config, "vision_config") or config
    specs: list[InputSpec] = []
    for name in forward:
        if name == "input_ids":
            positions = _usable_positions(text)
            seq = min(DEFAULT_SEQ_LEN, positions) if positions else UNBOUNDED_SEQ_LEN
            specs.append(InputSpec((1, seq), "int64", name))
        elif name in _IMAGE_INPUTS:
            side = _side(_get(vision, "image_size"))
            if side is not None:
                specs.append(InputSpec((1, int(_get(vision, "num_channels", default=3)), *side), "float32", name))
        elif name == "input_features" and _get(config, "num_mel_bins"):
            frames = 2 * int(_get(config, "max_source_positions", default=1500))   # conv2 has stride 2
            specs.append(InputSpec((1, int(_get(config, "num_mel_bins")), frames), "float32", name))
        elif name == "decoder_input_ids" and _get(config, "is_encoder_decoder"):
            target = _get(config, "max_target_positions")
            specs.append(InputSpec((1, min(DEFAULT_TARGET_LEN, target) if target else DEFAULT_TARGET_LEN), "int64",
                                   name))
        elif name == "sample" and _get(config, "in_channels") and _side(_get(config, "sample_size")):
            side = _side(_get(config, "sample_size"))
            specs.append(InputSpec((1, int(_get(config, "in_channels")), *side), "float32", name))
        elif name == "timestep" and any(s.name == "sample" for s in specs):
            specs.append(InputSpec((1,), "int64", name))
        elif name == "encoder_hidden_states" and _get(config, "cross_attention_dim") and any(
                s.name == "sample" for s in specs):
            specs.append(InputSpec((1, 77, int(_get(config, "cross_attention_dim"))), "float32", name))
    return tuple(specs)


def is_decoder_input(spec: InputSpec) -> bool:
    """An encoder-decoder's target tokens (``decoder_input_ids``...): sized by --target-len, not --seq-len."""
    return bool(spec.name) and spec.name.startswith(_DECODER_PREFIX)


# ------------------------------------------------------------------------------------------------- timm
def timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def timm_names() -> list[str]:
    if not timm_available():
        return []
    import timm

    return sorted(timm.list_models())


def load_timm(spec: str, user_kwargs: Mapping):
    """``timm/NAME`` -> LoadedModel (``timm.create_model(NAME, pretrained=False)`` on meta); None when timm is
    not installed or does not know NAME (the caller words the error)."""
    name = spec.strip()[len(hf_catalog.TIMM_PREFIX):] if hf_catalog.is_timm_name(spec) else spec.strip()
    if not timm_available():
        return None
    import timm

    if not timm.is_model(name):
        return None
    build_kwargs = {"pretrained": False, **user_kwargs}
    try:
        module = build_on_meta(timm.create_model, name, **build_kwargs)
    except Exception as exc:  # noqa: BLE001 - a bad kwarg
        raise ModelLoadError(f"building timm/{name} failed: {type(exc).__name__}: {_first_line(exc)}",
                             field="model") from exc
    input_size = (getattr(module, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224)
    return LoadedModel(module, f"{hf_catalog.TIMM_PREFIX}{name}", (InputSpec((1, *input_size)),), TIMM_FAMILY,
                       build_kwargs)
