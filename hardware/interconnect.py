"""Links between GPUs: NVLink generations and their NVSwitch domains, AMD Infinity Fabric, PCIe, InfiniBand and
RoCE, from resources/interconnects.toml plus the user's [[interconnect]] tables (hardware/user_file.py).

Every figure is per GPU and one direction (GB/s = 1e9 B/s): the link's peak, the share of it NCCL reaches as bus
bandwidth on large messages (``efficiency``), and a fixed latency per collective call. docs/hardware.md has the
table and its sources. No engine, no Qt."""
from __future__ import annotations

import difflib
import importlib.resources
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchbudget.hardware.errors import InterconnectFileError, UnknownInterconnectError
from torchbudget.hardware.spec import GpuSpec
from torchbudget.hardware.spec_file import SpecFileError, read_document

KINDS = ("nvlink", "xgmi", "pcie", "infiniband", "roce")
INTRA_NODE_KINDS = ("nvlink", "xgmi", "pcie")
# The link between nodes when none is named: one 400 Gb/s NDR InfiniBand port per GPU, as in DGX/HGX H100
# and H200 clusters (rail-optimised: 8 compute ports per 8-GPU node).
DEFAULT_INTER_NODE = "InfiniBand NDR"
# A GPU with no `interconnect` in its spec entry (a user GPU, a derived local one): its PCIe generation by
# compute capability major (or AMD gfx target). Volta/Turing: Gen 3; Ampere/Ada: Gen 4; Hopper and later: Gen 5.
PCIE_BY_CC_MAJOR = {"6": "PCIe 3 x16", "7": "PCIe 3 x16", "8": "PCIe 4 x16", "9": "PCIe 5 x16",
                    "10": "PCIe 5 x16", "12": "PCIe 5 x16", "gfx90a": "PCIe 4 x16", "gfx942": "PCIe 5 x16",
                    "gfx950": "PCIe 5 x16"}
FALLBACK_INTRA_NODE = "PCIe 4 x16"

MAX_BANDWIDTH_GB_S = 100_000     # GB/s: more is a unit slip (Gb/s, B/s)
MAX_LATENCY_US = 1_000_000       # one second per call is no interconnect
MAX_DOMAIN_GPUS = 1_000_000

_STRING_KEYS = ("name", "kind", "source", "efficiency_source")
_NUMBER_KEYS = ("bandwidth_gb_s", "efficiency", "latency_us")
KNOWN_KEYS = frozenset((*_STRING_KEYS, *_NUMBER_KEYS, "domain_gpus", "aliases"))
BUILTIN_REQUIRED = ("name", "kind", "bandwidth_gb_s", "efficiency", "latency_us", "source", "efficiency_source")
NEW_USER_REQUIRED = ("name", "kind", "bandwidth_gb_s")


@dataclass(frozen=True)
class Interconnect:
    name: str                       # canonical, e.g. "NVLink 4"
    kind: str                       # one of KINDS
    bandwidth_gb_s: float           # peak per GPU, one direction, 1e9 B/s
    efficiency: float               # share of bandwidth_gb_s NCCL reaches as bus bandwidth (large messages)
    latency_us: float               # fixed time per collective call
    source: str                     # where bandwidth_gb_s and domain_gpus come from
    aliases: tuple[str, ...] = ()
    domain_gpus: int | None = None  # most GPUs joined all-to-all at full bandwidth; None = no limit
    efficiency_source: str = ""     # where efficiency and latency_us come from
    origin: str = "database"        # "database" | "user" (a user entry or a user override of a built-in)

    @property
    def bus_bandwidth_gb_s(self) -> float:
        """What NCCL reaches: the bandwidth the bus-bandwidth formulas divide by."""
        return self.bandwidth_gb_s * self.efficiency

    @property
    def bus_bandwidth_bytes_per_s(self) -> float:
        return self.bus_bandwidth_gb_s * 1e9

    @property
    def latency_s(self) -> float:
        return self.latency_us * 1e-6


def interconnect_key(text: str) -> str:
    """Case, spaces and punctuation do not count: "NVLink 4" == "nvlink4" == "nvlink-4"; "ib-ndr" == "IB NDR"."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(path: Path, index: int, entry: dict, field: str, problem: str) -> InterconnectFileError:
    label = f"interconnect {index + 1}" + (f" ({_short(entry['name'])})" if isinstance(entry.get("name"), str) else "")
    return InterconnectFileError(f"{path}: {label}, field {_short(field)}: {problem}")


def _control(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def check_entry(path: Path, index: int, entry: Any, required: tuple[str, ...]) -> None:
    """Types and ranges of one [[interconnect]] table; only the keys it has (plus ``required``)."""
    if not isinstance(entry, dict):
        raise InterconnectFileError(f"{path}: interconnect {index + 1} is not a table ([[interconnect]])")
    for key in entry:
        if key not in KNOWN_KEYS:
            raise _fail(path, index, entry, key, f"unknown key (known: {', '.join(sorted(KNOWN_KEYS))})")
    for key in required:
        if key not in entry:
            raise _fail(path, index, entry, key, "missing")
    for key in _STRING_KEYS:
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise _fail(path, index, entry, key, f"must be a non-empty string, got {_short(entry[key])}")
        if key in entry and _control(entry[key]):
            raise _fail(path, index, entry, key, f"must not contain control characters, got {_short(entry[key])}")
    for key in _NUMBER_KEYS:
        value = entry.get(key)
        if key in entry and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise _fail(path, index, entry, key, f"must be a number, got {_short(value)}")
    if "kind" in entry and entry["kind"] not in KINDS:
        raise _fail(path, index, entry, "kind", f"must be one of {', '.join(KINDS)}, got {_short(entry['kind'])}")
    if "bandwidth_gb_s" in entry and not 0 < entry["bandwidth_gb_s"] <= MAX_BANDWIDTH_GB_S:
        raise _fail(path, index, entry, "bandwidth_gb_s", f"{entry['bandwidth_gb_s']:.3g} is not in (0, "
                                                          f"{MAX_BANDWIDTH_GB_S}] GB/s (unit is GB/s per direction)")
    if "efficiency" in entry and not 0 < entry["efficiency"] <= 1:
        raise _fail(path, index, entry, "efficiency", f"{entry['efficiency']:.3g} is not a fraction in (0, 1]")
    if "latency_us" in entry and not 0 <= entry["latency_us"] <= MAX_LATENCY_US:
        raise _fail(path, index, entry, "latency_us", f"{entry['latency_us']:.3g} is not in [0, {MAX_LATENCY_US}] "
                                                      "microseconds")
    if "domain_gpus" in entry:
        value = entry["domain_gpus"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DOMAIN_GPUS:
            raise _fail(path, index, entry, "domain_gpus", f"must be a positive integer, got {_short(value)}")
    if "aliases" in entry:
        aliases = entry["aliases"]
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise _fail(path, index, entry, "aliases", "must be a list of non-empty strings")
        if any(_control(a) for a in aliases):
            raise _fail(path, index, entry, "aliases", "must not contain control characters")


def _names(entry: dict) -> list[tuple[str, str]]:
    return [(interconnect_key(entry["name"]), "name")] + [(interconnect_key(a), "aliases")
                                                         for a in entry.get("aliases", [])]


def check_unique(path: Path, entries: list[dict]) -> None:
    owner: dict[str, int] = {}
    for index, entry in enumerate(entries):
        for key, field in _names(entry):
            if not key:
                raise _fail(path, index, entry, field, "a name with no letters or digits")
            other = owner.setdefault(key, index)
            if other != index:
                raise _fail(path, index, entry, field, f"{key!r} is already used by interconnect {other + 1} "
                                                       f"({entries[other]['name']!r})")


def builtin_file_path() -> Path:
    return Path(str(importlib.resources.files("torchbudget.resources") / "interconnects.toml"))


def load_tables(path: Path) -> list[Any]:
    """The raw [[interconnect]] tables of a hardware file ([] when it has none)."""
    try:
        document = read_document(path)
    except InterconnectFileError:
        raise
    except SpecFileError as exc:
        raise InterconnectFileError(str(exc)) from None
    tables = document.get("interconnect", [])
    if not isinstance(tables, list):
        raise InterconnectFileError(f"{path}: 'interconnect' must be an array of tables ([[interconnect]])")
    return tables


def load_builtin_entries(path: Path | None = None) -> list[dict]:
    path = path or builtin_file_path()
    entries = load_tables(path)
    for index, entry in enumerate(entries):
        check_entry(path, index, entry, BUILTIN_REQUIRED)
    check_unique(path, entries)
    return entries


def merge_user_entries(builtin: list[dict], user: list[Any], user_path: Path) -> list[tuple[dict, str]]:
    """A user table whose name (or alias) is a built-in's overrides the keys it gives; any other user table is a
    new interconnect (name, kind and bandwidth_gb_s required; efficiency, latency_us default to the first
    built-in of its kind)."""
    by_key = {key: i for i, entry in enumerate(builtin) for key, _ in _names(entry)}
    merged: list[tuple[dict, str]] = [(dict(entry), "database") for entry in builtin]
    for index, entry in enumerate(user):
        check_entry(user_path, index, entry, ("name",))
        target = by_key.get(interconnect_key(entry["name"]))
        if target is not None:
            base = merged[target][0]
            changed = sorted(k for k in entry if k != "name")
            combined = {**base, **{k: v for k, v in entry.items() if k != "name"}}
            if "source" not in entry and any(k in entry for k in ("bandwidth_gb_s", "domain_gpus", "kind")):
                combined["source"] = f"user file {user_path} ({', '.join(changed)}) over: {base['source']}"
            if "efficiency_source" not in entry and any(k in entry for k in ("efficiency", "latency_us")):
                combined["efficiency_source"] = f"user file {user_path}"
            merged[target] = (combined, "user")
            continue
        check_entry(user_path, index, entry, NEW_USER_REQUIRED)
        same_kind = next(e for e in builtin if e["kind"] == entry["kind"])
        new = {"efficiency": same_kind["efficiency"], "latency_us": same_kind["latency_us"],
               "source": f"user file {user_path}",
               "efficiency_source": (f"user file {user_path}" if "efficiency" in entry
                                     else f"as {same_kind['name']} ({same_kind['efficiency_source']})"),
               **entry}
        merged.append((new, "user"))
    check_unique(user_path, [entry for entry, _ in merged])
    return merged


def interconnect_from_entry(entry: dict, *, origin: str) -> Interconnect:
    return Interconnect(
        name=entry["name"], kind=entry["kind"], bandwidth_gb_s=float(entry["bandwidth_gb_s"]),
        efficiency=float(entry["efficiency"]), latency_us=float(entry["latency_us"]), source=entry["source"],
        aliases=tuple(entry.get("aliases", ())), domain_gpus=entry.get("domain_gpus"),
        efficiency_source=entry.get("efficiency_source", ""), origin=origin)


_lock = threading.Lock()
_table: tuple[Interconnect, ...] | None = None
_table_key: tuple | None = None
_problem: InterconnectFileError | None = None   # why the user file was left out of _table


def _user_path() -> Path:
    from torchbudget.hardware.user_file import user_file_path  # user_file imports spec_file only; no cycle
    return user_file_path()


def _state(path: Path) -> tuple:
    try:
        return (str(path), path.stat().st_mtime_ns)
    except OSError:
        return (str(path), None)


def interconnects(*, strict: bool = True) -> tuple[Interconnect, ...]:
    """The built-in table with the user file's overrides and additions. Cached until the user file changes.
    A user file that does not load raises InterconnectFileError; with ``strict=False`` (the app, which says
    once that the file was ignored) the built-in table is used instead."""
    global _table, _table_key, _problem
    user_path = _user_path()
    key = _state(user_path)
    with _lock:
        if _table is None or _table_key != key:
            builtin = load_builtin_entries()
            try:
                user = load_tables(user_path) if user_path.exists() else []
                merged = merge_user_entries(builtin, user, user_path)
                _problem = None
            except InterconnectFileError as exc:
                merged, _problem = [(entry, "database") for entry in builtin], exc
            _table = tuple(interconnect_from_entry(entry, origin=origin) for entry, origin in merged)
            _table_key = key
        if strict and _problem is not None:
            raise _problem
        return _table


def reload() -> None:
    global _table
    with _lock:
        _table = None


def find_interconnect(name: str | Interconnect, *, strict: bool = True) -> Interconnect:
    """Any spelling of a name or alias ("NVLink 4", "nvlink4", "pcie5", "ib-ndr", "roce-400"); an Interconnect is
    returned as is. Unknown: UnknownInterconnectError naming the closest."""
    if isinstance(name, Interconnect):
        return name
    text = (name or "").strip() if isinstance(name, str) else ""
    if not text:
        raise UnknownInterconnectError("no interconnect name given")
    table = interconnects(strict=strict)
    key = interconnect_key(text)
    for link in table:
        if key in {interconnect_key(n) for n in (link.name, *link.aliases)}:
            return link
    by_key = {interconnect_key(n): link.name for link in table for n in (link.name, *link.aliases)}
    close = difflib.get_close_matches(key, list(by_key), n=8, cutoff=0.5)
    suggestions = list(dict.fromkeys(by_key[k] for k in close))[:4]
    hint = f" Closest: {', '.join(suggestions)}." if suggestions else ""
    raise UnknownInterconnectError(f"unknown interconnect {_short(text)}.{hint} `torchbudget gpus --interconnects` "
                                   "lists them all; add your own in the user hardware file.")


def default_intra_node(gpu: GpuSpec, *, strict: bool = True) -> Interconnect:
    """The link between GPUs of one node: the GPU entry's ``interconnect`` (H100 SXM: NVLink 4, A100 SXM: NVLink 3,
    B200: NVLink 5, GB200: NVLink 5 NVL72, MI300X: Infinity Fabric, PCIe cards: their PCIe generation); a GPU
    without one gets its PCIe generation by compute capability."""
    if gpu.interconnect:
        return find_interconnect(gpu.interconnect, strict=strict)
    cc = gpu.compute_capability or ""
    major = cc if cc.startswith("gfx") else cc.split(".")[0]
    return find_interconnect(PCIE_BY_CC_MAJOR.get(major, FALLBACK_INTRA_NODE), strict=strict)


def default_inter_node() -> Interconnect:
    """InfiniBand NDR, 400 Gb/s per GPU."""
    return find_interconnect(DEFAULT_INTER_NODE)
