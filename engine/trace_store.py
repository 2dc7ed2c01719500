"""Traces kept on disk between runs, so the app opens on its last workload's verdict without tracing
(importing PyTorch alone takes longer than the whole verdict otherwise).

An entry is reused only by the same torch, torchvision, Python and engine source code: their fingerprint
is part of every entry's name, so upgrading any of them, or editing the engine, starts afresh. Only models
named from a registry are stored (torchvision names such as ``resnet50``, bundled Hugging Face configs by hub
id or alias — the entry's content is part of the key, so editing a bundled config starts its traces afresh —
and ``timm/NAME``): a user's ``.py`` file or config.json can change under the same name. Small facts of the same environment (the model list, which needs torchvision) are
kept beside the traces (``load_fact``). Entries are gzip'd JSON (``engine.serialize``, never pickle); a
damaged or foreign file reads as a miss. No torch import here."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from torchbudget.engine import hf_catalog
from torchbudget.engine.results import AnalysisResult
from torchbudget.engine.serialize import result_from_dict, result_to_dict
from torchbudget.engine.user_code import is_file_spec
from torchbudget.engine.workload import Workload

CACHE_DIR_ENV = "TORCHBUDGET_CACHE_DIR"
ENTRY_SUFFIX = ".trace.json.gz"
DEFAULT_MAX_ENTRIES = 400     # ~20-60 KiB each for a CNN


def default_directory() -> Path:
    """platformdirs' user cache dir for torchbudget, or ``$TORCHBUDGET_CACHE_DIR`` (tests, portable installs)."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("torchbudget")) / "traces"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def environment_fingerprint() -> str:
    """Hash of what a trace depends on: the versions of the libraries whose code runs in it (torch, torchvision,
    transformers, timm, peft's LoRA injection), Python, and the engine's own source."""
    digest = hashlib.sha256()
    digest.update(f"{_version('torch')}|{_version('torchvision')}|{_version('transformers')}|{_version('timm')}|"
                  f"{_version('peft')}|{sys.version_info[:2]}".encode())
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def storable(workload: Workload) -> bool:
    """A model named from a registry: a torchvision name (an identifier: never a file spec), a bundled Hugging
    Face config (hub id or alias) or ``timm/NAME``. Not a user's ``.py`` file or a local config.json."""
    model = workload.model.strip()
    if is_file_spec(model):
        return False
    if model.isidentifier() or hf_catalog.find_bundled(model) is not None:
        return True
    return hf_catalog.is_timm_name(model) and model[len(hf_catalog.TIMM_PREFIX):].replace(".", "_").isidentifier()


class TraceStore:
    def __init__(self, directory: Path | str | None = None, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.directory = Path(directory) if directory is not None else default_directory()
        self.max_entries = max_entries

    def path_for(self, workload: Workload) -> Path:
        name = hashlib.sha256(f"{environment_fingerprint()}|{hf_catalog.model_digest(workload.model)}|"
                              f"{workload.key()!r}".encode()).hexdigest()[:32]
        return self.directory / f"{name}{ENTRY_SUFFIX}"

    def has(self, workload: Workload) -> bool:
        return storable(workload) and self.path_for(workload).is_file()

    def load(self, workload: Workload) -> AnalysisResult | None:
        """The stored trace, or None (not stored, other environment, damaged file)."""
        if not storable(workload):
            return None
        path = self.path_for(workload)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("key") != repr(workload.key()):
                return None
            result = result_from_dict(data["result"])
            os.utime(path)   # recently used: pruned last
            return result
        except Exception:  # noqa: BLE001 - missing or damaged: a miss, replaced by the next save
            return None

    def save(self, workload: Workload, result: AnalysisResult) -> None:
        """Errors (read-only disk, full disk) are ignored: the store only saves time."""
        if storable(workload) and self._write(self.path_for(workload),
                                              {"key": repr(workload.key()), "result": result_to_dict(result)}):
            try:
                self._prune()
            except OSError:
                pass   # another process pruned at the same time

    def load_fact(self, name: str):
        """A JSON value saved by ``save_fact`` in this same environment, or None."""
        try:
            with gzip.open(self._fact_path(name), "rt", encoding="utf-8") as handle:
                return json.load(handle)
        except Exception:  # noqa: BLE001 - missing or damaged: recomputed by the caller
            return None

    def save_fact(self, name: str, value) -> None:
        """Replaces the fact; the same fact from other environments (older versions) is deleted."""
        path = self._fact_path(name)
        if self._write(path, value):
            try:
                for other in self.directory.glob(f"{name}-*.json.gz"):
                    if other != path:
                        other.unlink(missing_ok=True)
            except OSError:
                pass   # left for the next save

    def _fact_path(self, name: str) -> Path:
        return self.directory / f"{name}-{environment_fingerprint()}.json.gz"

    def _write(self, path: Path, value) -> bool:
        """Atomically (a reader never sees half a file); False when the disk refused."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            payload = gzip.compress(json.dumps(value, separators=(",", ":")).encode("utf-8"), compresslevel=1)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(payload)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return True
        except OSError:
            return False

    def _prune(self) -> None:
        entries = list(self.directory.glob(f"*{ENTRY_SUFFIX}"))
        if len(entries) <= self.max_entries:
            return
        entries.sort(key=lambda p: p.stat().st_mtime)
        for path in entries[:len(entries) - self.max_entries]:
            path.unlink(missing_ok=True)
