"""The user's hardware file: extra GPUs, or overrides of built-in ones by name; extra interconnects, or overrides of
a built-in interconnect's figures ([[interconnect]] tables, read by hardware/interconnect.py).

It lives at platformdirs' ``user_config_dir("torchbudget")/gpus.toml``; the environment variable
``TORCHBUDGET_CONFIG_DIR`` points it elsewhere (tests, portable installs). Same schema as
resources/gpus.toml, except that ``source`` is optional.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import platformdirs

from torchbudget.hardware.errors import SpecFileError
from torchbudget.hardware.names import name_key
from torchbudget.hardware.spec import GpuSpec
from torchbudget.hardware.spec_file import (builtin_file_path, check_entry, dump_entries, entry_from_spec, load_entries,
                                            merge_entries, read_document)

CONFIG_DIR_ENV = "TORCHBUDGET_CONFIG_DIR"
_HEADER = ("TorchBudget user GPU file: entries here add to or override (by name) the built-in database.\n"
           "Units: memory_gib (GiB), bandwidth_gbs (1e9 B/s), *_tflops dense TFLOPS. See docs/hardware.md.\n"
           "[[interconnect]] tables add links or override a built-in's figures (bandwidth_gb_s per direction, "
           "efficiency, latency_us).")


def user_file_path() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    directory = Path(override) if override else Path(platformdirs.user_config_dir("torchbudget"))
    return directory / "gpus.toml"


def load_user_entries() -> list[dict]:
    """Validated entries of the user file; [] when it does not exist."""
    path = user_file_path()
    return load_entries(path) if path.exists() else []


def _write(entries: list[dict]) -> None:
    """The catalogue notices the new file by its modification time (hardware.catalog.database)."""
    path = user_file_path()
    # the file must still load: valid entries, no name or alias clashing with a built-in GPU
    merge_entries(load_entries(builtin_file_path()), entries, path)
    # the file's [[interconnect]] tables (hardware/interconnect.py) are kept as they are
    interconnects = read_document(path).get("interconnect", []) if path.exists() else []
    try:
        text = dump_entries(entries, _HEADER, interconnects if isinstance(interconnects, list) else [])
    except TypeError:
        raise SpecFileError(f"{path}: its [[interconnect]] tables hold values this file cannot write back (nested "
                            "tables?); fix them first, the file is unchanged", field="interconnect") from None
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write a temporary file and rename it, so a crash or a full disk never leaves half a file
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(text)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise SpecFileError(f"{path}: could not be written ({exc.strerror or exc}); the file is unchanged",
                            field="gpu") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def save_user_gpu(spec: GpuSpec) -> None:
    """Add ``spec`` to the user file, replacing an entry of the same name. Validated before writing."""
    entries = [e for e in load_user_entries() if name_key(e["name"]) != name_key(spec.name)]
    entry = entry_from_spec(spec)
    check_entry(user_file_path(), len(entries), entry, require_source=False)
    _write(entries + [entry])


def remove_user_gpu(name: str) -> None:
    """Remove the user entry called ``name``; SpecFileError when the user file has no such entry."""
    entries = load_user_entries()
    kept = [e for e in entries if name_key(e["name"]) != name_key(name)]
    if len(kept) == len(entries):
        raise SpecFileError(f"{user_file_path()}: no user GPU named {name!r} to remove", field="gpu")
    _write(kept)
