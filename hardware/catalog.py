"""The GPU catalogue: built-in database + user file, name resolution, local GPUs, default GPU."""
from __future__ import annotations

import difflib
import re
import threading
from pathlib import Path

from torchbudget.hardware.errors import UnknownGpuError
from torchbudget.hardware import nvml
from torchbudget.hardware.local import specs_from_probe
from torchbudget.hardware.names import name_key, name_tokens
from torchbudget.hardware.spec import GpuSpec
from torchbudget.hardware.spec_file import builtin_file_path, load_entries, merge_entries, spec_from_entry
from torchbudget.hardware.user_file import load_user_entries, user_file_path

# What-if GPU when none is detected: a widely rented training GPU.
DEFAULT_GPU_NAME = "A100 SXM 80GB"

_lock = threading.Lock()
_database: tuple[GpuSpec, ...] | None = None
_database_key: tuple | None = None


def _user_file_state(path: Path) -> tuple:
    try:
        return (str(path), path.stat().st_mtime_ns)
    except OSError:
        return (str(path), None)


def database() -> tuple[GpuSpec, ...]:
    """Built-in entries plus the user file's (which override by name). Cached until ``reload()`` or until
    the user file moves or changes."""
    global _database, _database_key
    key = _user_file_state(user_file_path())
    with _lock:
        if _database is None or _database_key != key:
            builtin = load_entries(builtin_file_path(), require_source=True)
            merged = merge_entries(builtin, load_user_entries(), user_file_path())
            _database = tuple(spec_from_entry(entry, origin=origin) for entry, origin in merged)
            _database_key = key
        return _database


def reload() -> None:
    global _database
    with _lock:
        _database = None


def local_gpus() -> tuple[GpuSpec, ...]:
    """Detected GPUs as GpuSpecs (origin "live" or "derived"); () without NVML or GPUs."""
    return specs_from_probe(nvml.probe(), database())


def default_gpu() -> GpuSpec:
    """The first local GPU, else DEFAULT_GPU_NAME from the database."""
    local = local_gpus()
    return local[0] if local else resolve_gpu(DEFAULT_GPU_NAME)


def _spec_names(spec: GpuSpec) -> tuple[str, ...]:
    return (spec.name, *spec.aliases, *spec.nvml_names)


def _resolve_local(text: str) -> GpuSpec:
    match = re.fullmatch(r"local(?::(\d+))?", text.strip().lower())
    index = int(match.group(1) or 0)
    local = local_gpus()
    if not local:
        reason = nvml.probe().error or "no GPU detected"
        raise UnknownGpuError(f"no local GPU found ({reason}); pick one from the database instead")
    if index >= len(local):
        raise UnknownGpuError(f"there is no local GPU {index}: found {len(local)} "
                              f"({', '.join(f'local:{i} = {s.name}' for i, s in enumerate(local))})")
    return local[index]


def resolve_gpu(name: str) -> GpuSpec:
    """Any unambiguous spelling of a GPU name, alias or NVML name; "local" / "local:N" for a detected one."""
    text = (name or "").strip()
    if not text:
        raise UnknownGpuError("no GPU name given")
    if re.fullmatch(r"local(:\d+)?", text.lower()):
        return _resolve_local(text)
    specs = database()
    key = name_key(text)
    for spec in specs:
        if key in {name_key(n) for n in _spec_names(spec)}:
            return spec
    for spec in local_gpus():  # a derived device or MIG instance is only known by its local name
        if key == name_key(spec.name):
            return spec
    query = set(name_tokens(text))
    candidates = [s for s in specs if query and any(query <= set(name_tokens(n)) for n in _spec_names(s))]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        listed = ", ".join(s.name for s in candidates[:8])
        raise UnknownGpuError(f"GPU name {text!r} is ambiguous: it matches {listed}. Give the full name.")
    by_key = {name_key(n): s.name for s in specs for n in _spec_names(s)}
    close = difflib.get_close_matches(key, list(by_key), n=8, cutoff=0.5)
    suggestions = list(dict.fromkeys(by_key[k] for k in close))[:5]
    hint = f" Closest: {', '.join(suggestions)}." if suggestions else ""
    raise UnknownGpuError(f"unknown GPU {text!r}.{hint} `torchbudget gpus` lists all known GPUs; "
                          f"add your own in the user hardware file.")
