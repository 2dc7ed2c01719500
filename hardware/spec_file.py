"""GPU spec files (resources/gpus.toml and the user's gpus.toml): schema check, GpuSpec building,
and writing entries back. Units live in the key names; see the header of resources/gpus.toml."""
from __future__ import annotations

import importlib.resources
import json
import math
import stat
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from torchbudget.hardware.errors import SpecFileError
from torchbudget.hardware.names import name_key
from torchbudget.hardware.spec import GpuSpec

GIB = 2**30
# GpuSpec.available_memory_bytes is what the device offers a process before it starts CUDA; the CUDA
# context, workspaces and allocator effects are the planner's (engine.overheads), subtracted nowhere here.
# What-if GPUs only: memory an idle GPU never offers = marketed capacity - NVML free when idle (driver and
# firmware reservation + capacity NVML does not list). Measured (nvidia-smi -q, public logs): H100 80GB HBM3
# total 81559 MiB, reserved 328-551, free 81007-81227 of 81920 -> 693-913 MiB; A100 80GB total 81920,
# reserved 557-834; RTX 4090 total 24564, reserved 354 -> about 366 MiB. Live GPUs use NVML free instead.
DRIVER_RESERVE_BYTES = 768 * 2**20


def what_if_available_bytes(memory_bytes: int) -> int:
    """Memory a GPU that is not in this machine offers a new process: total - driver reserve."""
    return max(0, memory_bytes - DRIVER_RESERVE_BYTES)

VENDORS = ("NVIDIA", "AMD", "Apple", "Intel", "Other")
SEGMENTS = ("datacenter", "workstation", "geforce", "edge", "laptop", "other")
# TOML key -> GpuSpec.peak_tflops key
PEAK_KEYS = {"fp32_tflops": "fp32", "tf32_tflops": "tf32", "fp16_tflops": "fp16", "bf16_tflops": "bf16",
             "fp8_tflops": "fp8", "int8_tops": "int8"}
TENSOR_PEAK_KEYS = ("tf32_tflops", "fp16_tflops", "bf16_tflops", "fp8_tflops")
# upper bounds catch unit slips (bytes for GiB, TB/s for GB/s, FLOP/s for TFLOPS)
MAX_MEMORY_GIB = 4096
MAX_BANDWIDTH_GBS = 100_000
MAX_TFLOPS = 100_000
MAX_COUNT = 1_000_000          # sm_count, boost_clock_mhz, tdp_w
MIN_MEMORY_GIB = 1 / 1024      # 1 MiB: less is a unit slip (bytes in TiB?) or a typo
# a spec file is a few KiB (the built-in one ~20 KiB); a bigger one is not a GPU file (and parsing it
# would keep the CLI and the app waiting)
MAX_FILE_BYTES = 4 * 2**20

_STRING_KEYS = ("name", "vendor", "segment", "architecture", "compute_capability", "memory_type", "source",
                "interconnect")
_INT_KEYS = ("sm_count", "boost_clock_mhz", "tdp_w")
_NUMBER_KEYS = ("memory_gib", "bandwidth_gbs", "available_memory_gib", "fp16_acc16_tflops", *PEAK_KEYS)
_LIST_KEYS = ("nvml_names", "aliases")
KNOWN_KEYS = frozenset((*_STRING_KEYS, *_INT_KEYS, *_NUMBER_KEYS, *_LIST_KEYS, "half_rate_fp32_accumulate"))
REQUIRED_KEYS = ("name", "vendor", "memory_gib", "bandwidth_gbs", "fp32_tflops")


def _short(value: Any, limit: int = 60) -> str:
    """repr() cut to fit in a one-line message (a hostile file may hold a megabyte-long value)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(path: Path, index: int, entry: dict, field: str, problem: str) -> SpecFileError:
    label = f"entry {index + 1}" + (f" ({_short(entry['name'])})" if isinstance(entry.get("name"), str) else "")
    return SpecFileError(f"{path}: {label}, field {_short(field)}: {problem}", field="gpu")


def _has_control_characters(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def check_entry(path: Path, index: int, entry: Any, require_source: bool) -> None:
    if not isinstance(entry, dict):
        raise SpecFileError(f"{path}: entry {index + 1} is not a table ([[gpu]])", field="gpu")
    for key in entry:
        if key == "usable_memory_gib":
            raise _fail(path, index, entry, key, "renamed available_memory_gib: the memory a new process is offered "
                                                 "before CUDA starts (the planner now subtracts the CUDA context itself)")
        if key not in KNOWN_KEYS:
            raise _fail(path, index, entry, key, f"unknown key (known: {', '.join(sorted(KNOWN_KEYS))})")
    for key in REQUIRED_KEYS + (("source",) if require_source else ()):
        if key not in entry:
            raise _fail(path, index, entry, key, "missing")
    for key in _STRING_KEYS:
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise _fail(path, index, entry, key, f"must be a non-empty string, got {_short(entry[key])}")
        if key in entry and _has_control_characters(entry[key]):
            raise _fail(path, index, entry, key, f"must not contain control characters, got {_short(entry[key])}")
    for key in _INT_KEYS:
        if key in entry and (isinstance(entry[key], bool) or not isinstance(entry[key], int) or entry[key] <= 0):
            raise _fail(path, index, entry, key, f"must be a positive integer, got {_short(entry[key])}")
        if key in entry and entry[key] > MAX_COUNT:
            raise _fail(path, index, entry, key, f"{entry[key]:.3g} is implausible")
    for key in _NUMBER_KEYS:
        value = entry.get(key)
        if key in entry and (isinstance(value, bool) or not isinstance(value, (int, float))
                             or not math.isfinite(value) or value <= 0):
            raise _fail(path, index, entry, key, f"must be a positive number, got {_short(value)}")
    for key in _LIST_KEYS:
        if key in entry and (not isinstance(entry[key], list) or not all(isinstance(s, str) and s.strip() for s in entry[key])):
            raise _fail(path, index, entry, key, "must be a list of non-empty strings")
        if key in entry and any(_has_control_characters(s) for s in entry[key]):
            raise _fail(path, index, entry, key, "must not contain control characters")
    if "half_rate_fp32_accumulate" in entry and not isinstance(entry["half_rate_fp32_accumulate"], bool):
        raise _fail(path, index, entry, "half_rate_fp32_accumulate", "must be true or false")
    if entry["vendor"] not in VENDORS:
        raise _fail(path, index, entry, "vendor", f"must be one of {', '.join(VENDORS)}")
    if "segment" in entry and entry["segment"] not in SEGMENTS:
        raise _fail(path, index, entry, "segment", f"must be one of {', '.join(SEGMENTS)}")
    _check_ranges(path, index, entry)


def _check_ranges(path: Path, index: int, entry: dict) -> None:
    if entry["memory_gib"] > MAX_MEMORY_GIB:
        raise _fail(path, index, entry, "memory_gib", f"{entry['memory_gib']:.3g} GiB is implausible (unit is GiB)")
    for key in ("memory_gib", "available_memory_gib"):
        if key in entry and entry[key] < MIN_MEMORY_GIB:
            raise _fail(path, index, entry, key, f"{entry[key]:.3g} GiB is less than 1 MiB (unit is GiB)")
    if entry["bandwidth_gbs"] > MAX_BANDWIDTH_GBS:
        raise _fail(path, index, entry, "bandwidth_gbs",
                    f"{entry['bandwidth_gbs']:.3g} GB/s is implausible (unit is GB/s)")
    if entry.get("available_memory_gib", 0) > entry["memory_gib"]:
        raise _fail(path, index, entry, "available_memory_gib", "exceeds memory_gib")
    for key in (*PEAK_KEYS, "fp16_acc16_tflops"):
        if entry.get(key, 0) > MAX_TFLOPS:
            raise _fail(path, index, entry, key, f"{entry[key]:.3g} is implausible (unit is TFLOPS/TOPS)")
    for key in TENSOR_PEAK_KEYS:
        if key in entry and entry[key] < entry["fp32_tflops"]:
            raise _fail(path, index, entry, key, f"tensor rate {entry[key]} is below the non-tensor fp32 rate "
                                                 f"{entry['fp32_tflops']}")
    if "fp16_acc16_tflops" in entry and entry["fp16_acc16_tflops"] < entry.get("fp16_tflops", 0):
        raise _fail(path, index, entry, "fp16_acc16_tflops", "below the FP32-accumulate fp16 rate")


def entry_keys(entry: dict) -> list[tuple[str, str]]:
    """(normalised key, field) for every name an entry answers to."""
    keys = [(name_key(entry["name"]), "name")]
    keys += [(name_key(a), "aliases") for a in entry.get("aliases", [])]
    keys += [(name_key(n), "nvml_names") for n in entry.get("nvml_names", [])]
    return keys


def check_unique(path: Path, entries: list[dict]) -> None:
    """No two entries may answer to the same name, alias or NVML name."""
    owner: dict[str, int] = {}
    for index, entry in enumerate(entries):
        for key, field in entry_keys(entry):
            if not key:
                raise _fail(path, index, entry, field, "a name reduces to nothing after normalisation")
            other = owner.setdefault(key, index)
            if other != index:
                raise _fail(path, index, entry, field, f"{key!r} is already used by entry {other + 1} "
                                                       f"({entries[other]['name']!r})")


def _read_text(path: Path) -> str:
    """The file as text: a regular file (a FIFO or device would block or never end), small, UTF-8 (a
    byte-order mark is allowed: some editors write one), not binary."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise SpecFileError(f"{path}: not a regular file", field="gpu")
        if status.st_size > MAX_FILE_BYTES:
            raise SpecFileError(f"{path}: {status.st_size:,} bytes is too large for a GPU spec file "
                                f"(at most {MAX_FILE_BYTES // 2**20} MiB)", field="gpu")
        data = path.read_bytes()
    except OSError as exc:
        raise SpecFileError(f"{path}: cannot be read ({exc.strerror or exc})", field="gpu") from exc
    if b"\x00" in data:
        raise SpecFileError(f"{path}: a binary file (it contains NUL bytes), not TOML text", field="gpu")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecFileError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                            "save it as UTF-8", field="gpu") from None


# top-level tables a hardware file may hold: [[gpu]] here, [[interconnect]] read by hardware/interconnect.py
TOP_LEVEL_TABLES = ("gpu", "interconnect")


def read_document(path: Path) -> dict:
    """A hardware file parsed as TOML, with only known top-level tables; one SpecFileError naming the file."""
    text = _read_text(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecFileError(f"{path}: not valid TOML: {exc}", field="gpu") from None
    except RecursionError:   # tomllib recurses once per nested array or inline table
        raise SpecFileError(f"{path}: nests too deeply to be a GPU spec file", field="gpu") from None
    unknown = set(document) - set(TOP_LEVEL_TABLES)
    if unknown:
        raise SpecFileError(f"{path}: unknown top-level key(s) {_short(sorted(unknown))}; entries go in [[gpu]] "
                            "(or [[interconnect]]) tables", field="gpu")
    return document


def load_entries(path: Path, *, require_source: bool = False) -> list[dict]:
    """The validated [[gpu]] tables of a spec file; anything wrong is one SpecFileError naming the file."""
    document = read_document(path)
    entries = document.get("gpu", [])
    if not isinstance(entries, list):
        raise SpecFileError(f"{path}: 'gpu' must be an array of tables ([[gpu]])", field="gpu")
    for index, entry in enumerate(entries):
        check_entry(path, index, entry, require_source)
    check_unique(path, entries)
    return entries


def builtin_file_path() -> Path:
    return Path(str(importlib.resources.files("torchbudget.resources") / "gpus.toml"))


def merge_entries(builtin: list[dict], user: list[dict], user_path: Path) -> list[tuple[dict, str]]:
    """User entries replace built-in ones with the same name; the result must still be unambiguous."""
    user_keys = {name_key(e["name"]) for e in user}
    merged = [(e, "database") for e in builtin if name_key(e["name"]) not in user_keys]
    merged += [(e, "user") for e in user]
    check_unique(user_path, [e for e, _ in merged])  # a user alias may not steal another GPU's name
    return merged


def spec_from_entry(entry: dict, *, origin: str) -> GpuSpec:
    memory_bytes = round(entry["memory_gib"] * GIB)
    usable = entry.get("available_memory_gib")
    return GpuSpec(
        name=entry["name"],
        vendor=entry["vendor"],
        memory_bytes=memory_bytes,
        available_memory_bytes=round(usable * GIB) if usable else what_if_available_bytes(memory_bytes),
        bandwidth_gbs=float(entry["bandwidth_gbs"]),
        peak_tflops={dtype: (float(entry[key]) if key in entry else None) for key, dtype in PEAK_KEYS.items()},
        memory_type=entry.get("memory_type", ""),
        architecture=entry.get("architecture", ""),
        compute_capability=entry.get("compute_capability"),
        sm_count=entry.get("sm_count"),
        boost_clock_mhz=entry.get("boost_clock_mhz"),
        tdp_w=entry.get("tdp_w"),
        nvml_names=tuple(entry.get("nvml_names", ())),
        aliases=tuple(entry.get("aliases", ())),
        source=entry.get("source", ""),
        interconnect=entry.get("interconnect", ""),
        origin=origin,
    )


def entry_from_spec(spec: GpuSpec) -> dict:
    """The inverse of ``spec_from_entry`` for writing a user entry."""
    entry: dict[str, Any] = {"name": spec.name, "vendor": spec.vendor, "memory_gib": spec.memory_bytes / GIB,
                             "bandwidth_gbs": spec.bandwidth_gbs}
    for key, dtype in PEAK_KEYS.items():
        if spec.peak_tflops.get(dtype) is not None:
            entry[key] = float(spec.peak_tflops[dtype])
    if spec.available_memory_bytes != what_if_available_bytes(spec.memory_bytes):
        entry["available_memory_gib"] = spec.available_memory_bytes / GIB
    optional = {"memory_type": spec.memory_type, "architecture": spec.architecture,
                "compute_capability": spec.compute_capability, "sm_count": spec.sm_count,
                "boost_clock_mhz": spec.boost_clock_mhz, "tdp_w": spec.tdp_w, "source": spec.source,
                "nvml_names": list(spec.nvml_names), "aliases": list(spec.aliases),
                "interconnect": spec.interconnect}
    entry.update({k: v for k, v in optional.items() if v})
    return entry


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to a GPU spec file")


def dump_entries(entries: list[dict], header: str = "", interconnects: list[dict] = ()) -> str:
    """TOML text for flat [[gpu]] tables, then flat [[interconnect]] tables (the only shapes hardware files have)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for table, rows in (("gpu", entries), ("interconnect", interconnects)):
        for entry in rows:
            lines += ["", f"[[{table}]]"] + [f"{key} = {_toml_value(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"
