"""The bundled Hugging Face configs (resources/hf_models.toml) and local config.json files, read without
PyTorch or transformers: which names are bundled (hub ids, any case, and aliases), each entry's content
digest (part of its stored traces' key), and the position limits a plan warns about. engine.hf builds the
models; the trace store and the planner only need what is here."""
from __future__ import annotations

import hashlib
import importlib.resources
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CATALOG_FILE = "hf_models.toml"
TIMM_PREFIX = "timm/"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class BundledModel:
    hub_id: str                       # "meta-llama/Llama-3.1-8B", as the hub spells it
    aliases: tuple[str, ...]          # short names ("llama-3.1-8b")
    architecture: str                 # the transformers class ("LlamaForCausalLM")
    config: Mapping[str, object]      # config.json's shape-deciding fields, model_type included
    source: str                       # where the numbers were copied from
    digest: str = field(default="", compare=False)   # of the entry's content: part of its traces' key

    def __post_init__(self):
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


def _catalog_text() -> str:
    return (importlib.resources.files("torchbudget.resources") / CATALOG_FILE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def bundled_models() -> tuple[BundledModel, ...]:
    """Every bundled entry, in the file's order."""
    data = tomllib.loads(_catalog_text())
    out = []
    for hub_id, entry in data.get("models", {}).items():
        content = json.dumps({"hub_id": hub_id, **entry}, sort_keys=True)
        out.append(BundledModel(hub_id, tuple(entry.get("aliases", ())), entry["architecture"],
                                dict(entry["config"]), entry["source"],
                                hashlib.sha256(content.encode()).hexdigest()[:16]))
    return tuple(out)


@lru_cache(maxsize=1)
def _index() -> dict[str, BundledModel]:
    index: dict[str, BundledModel] = {}
    for model in bundled_models():
        for name in (model.hub_id, *model.aliases):
            index[name.lower()] = model
    return index


def find_bundled(name: str) -> BundledModel | None:
    """The bundled entry a hub id (any case) or alias names, else None."""
    return _index().get(name.strip().lower())


def bundled_names() -> list[str]:
    """Every name a bundled model answers to (hub ids as the hub spells them, then aliases)."""
    return [m.hub_id for m in bundled_models()] + [a for m in bundled_models() for a in m.aliases]


def is_timm_name(name: str) -> bool:
    return name.strip().lower().startswith(TIMM_PREFIX)


def model_digest(name: str) -> str:
    """What a stored trace of ``name`` depends on beyond the environment: a bundled entry's content ("" for
    torchvision and timm names, whose code is versioned by the environment fingerprint)."""
    model = find_bundled(name)
    return model.digest if model is not None else ""


# --------------------------------------------------------------------------------------- local configs
def local_config_path(spec: str) -> Path | None:
    """``path/to/config.json`` or a model folder holding one -> the config file; None when ``spec`` is not a
    JSON file or a folder on disk."""
    path = Path(spec.strip()).expanduser()
    try:
        if path.is_dir():
            return path / CONFIG_FILE
        if path.suffix.lower() == ".json" and path.is_file():
            return path
    except OSError:
        return None
    return None


def looks_like_path(spec: str) -> bool:
    """A spec meant as a file or folder (ends with .json, starts with . / ~, or is absolute)."""
    text = spec.strip()
    return text.lower().endswith(".json") or text.startswith((".", "/", "~")) or "\\" in text


# ------------------------------------------------------------------------------------- position limits
def _merged(config: Mapping, overrides: Mapping | None) -> dict:
    out = dict(config)
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _config_of(model: str, model_kwargs: Mapping | None) -> dict | None:
    bundled = find_bundled(model)
    if bundled is not None:
        return _merged(bundled.config, model_kwargs)
    path = local_config_path(model)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _merged(data, model_kwargs) if isinstance(data, dict) else None


# roberta-style models number positions from padding_idx + 1: two of max_position_embeddings are not usable
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")
# Architectures whose positions are rows of a learned table (nn.Embedding of max_position_embeddings rows):
# a longer sequence indexes past the table, which fake tensors do not notice but a GPU run fails on (an
# index error). Rotary (Llama, Mistral, Qwen, Gemma, Phi-3) and relative (T5) positions run at any length.
LEARNED_POSITIONS = frozenset({"gpt2", "bert", "roberta", "xlm-roberta", "camembert", "longformer", "distilbert",
                               "electra", "clip", "clip_text_model", "whisper", "gpt_neo", "opt", "bart", "mbart",
                               "blenderbot", "marian", "pegasus", "biogpt", "xglm"})


def position_limits(model: str, model_kwargs: Mapping | None = None) -> dict[str, int]:
    """The longest sequences a bundled or local-config model has positions for: ``{"tokens": N}`` for its
    (encoder's) token inputs and ``{"decoder": M}`` for an encoder-decoder's target tokens, from
    max_position_embeddings / n_positions (GPT-2) / text_config (CLIP) / max_target_positions (Whisper).
    Empty for models without learned or bounded positions known here (T5's relative positions, timm,
    torchvision). No torch import."""
    config = _config_of(model, model_kwargs)
    if config is None:
        return {}
    limits: dict[str, int] = {}
    text = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else config
    tokens = text.get("max_position_embeddings", text.get("n_positions"))
    if config.get("model_type") == "t5":
        tokens = None    # relative position buckets: n_positions is informational
    if isinstance(tokens, int) and tokens > 0:
        if config.get("model_type") in _OFFSET_POSITIONS:
            tokens -= int(config.get("pad_token_id", 1)) + 1
        limits["tokens"] = tokens
    decoder = config.get("max_target_positions")
    if isinstance(decoder, int) and decoder > 0:
        limits["decoder"] = decoder
    return limits


def learned_positions(model: str, model_kwargs: Mapping | None = None) -> bool:
    """True when the model's positions are a learned table (``LEARNED_POSITIONS``): nothing runs past it."""
    config = _config_of(model, model_kwargs)
    return config is not None and config.get("model_type") in LEARNED_POSITIONS


def learned_position_limit(model: str, model_kwargs: Mapping | None = None, *, decoder: bool = False) -> int | None:
    """The longest sequence a learned position table allows (None: no such table known): the (encoder's) token
    inputs, or with ``decoder`` an encoder-decoder's target tokens (Whisper's 448)."""
    if not learned_positions(model, model_kwargs):
        return None
    limits = position_limits(model, model_kwargs)
    return limits.get("decoder") if decoder and "decoder" in limits else limits.get("tokens")


def position_warning(model: str, model_kwargs: Mapping | None, inputs) -> str | None:
    """The warning for a token input longer than the model's positions (``positions_exceeded``), saying what a
    real run would do: index past a learned table (fails), or run rotary/relative positions untrained."""
    beyond = positions_exceeded(model, model_kwargs, inputs)
    if beyond is None:
        return None
    if learned_positions(model, model_kwargs):
        return (f"{beyond} (max_position_embeddings, a learned table): counted as if it had more, but a real "
                "run indexes past the table and fails")
    return f"{beyond} (max_position_embeddings): counted anyway, but the model was not trained for sequences " \
           "this long"


def positions_exceeded(model: str, model_kwargs: Mapping | None, inputs) -> str | None:
    """'sequence length 1,024 is above the 512 positions bert-base has' when a token input (an InputSpec) is
    longer than the model has positions for (``position_limits``), else None."""
    limits = position_limits(model, model_kwargs)
    if not limits:
        return None
    for spec in inputs:
        if len(spec.shape) != 2 or spec.dtype in ("float32", "float16", "bfloat16", "float64", "bool"):
            continue    # token inputs only (engine.vocab.InputKind.TOKENS)
        decoder = (spec.name or "").startswith("decoder_")
        limit = limits.get("decoder" if decoder and "decoder" in limits else "tokens")
        if limit and spec.shape[1] > limit:
            what = "target length" if decoder else "sequence length"
            return f"{what} {spec.shape[1]:,} is above the {limit:,} positions {model} has"
    return None
