"""`torchbudget gpus [--local] [--json]`: local GPUs (live memory), then the spec database."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options
from torchbudget.cli.format import dump_json, human_bytes, table
from torchbudget.hardware import catalog, nvml
from torchbudget.hardware.spec import PEAK_DTYPES, GpuSpec

TABLE_DTYPES = ("fp32", "tf32", "bf16", "fp8")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gpus", parents=[common_options()],
        help="list local GPUs and the GPU spec database",
        description="Local GPUs first (live free/total memory from NVML, matched database entry or derived "
                    "peaks), then every GPU in the database. Peaks are dense TFLOPS; memory in GiB (2**30 B); "
                    "bandwidth in GB/s (1e9 B/s).")
    parser.add_argument("--local", action="store_true", help="only the GPUs in this machine")
    parser.set_defaults(func=run)


def gpu_json(spec: GpuSpec) -> dict:
    return {
        "name": spec.name,
        "vendor": spec.vendor,
        "origin": spec.origin,
        "local_index": spec.local_index,
        "memory_bytes": spec.memory_bytes,
        "usable_memory_bytes": spec.usable_memory_bytes,
        "bandwidth_gbs": spec.bandwidth_gbs,
        "peak_tflops": {dtype: spec.peak_tflops.get(dtype) for dtype in PEAK_DTYPES},
        "memory_type": spec.memory_type,
        "architecture": spec.architecture,
        "compute_capability": spec.compute_capability,
        "sm_count": spec.sm_count,
        "boost_clock_mhz": spec.boost_clock_mhz,
        "tdp_w": spec.tdp_w,
        "nvml_names": list(spec.nvml_names),
        "aliases": list(spec.aliases),
        "source": spec.source,
    }


def _tflops(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _database_table(specs: tuple[GpuSpec, ...]) -> str:
    headers = ["GPU", "memory GiB", "GB/s", *(f"{d} TF" for d in TABLE_DTYPES), "origin"]
    rows = [[s.name, f"{s.memory_bytes / 2**30:g}", f"{s.bandwidth_gbs:,.0f}",
             *(_tflops(s.peak_tflops.get(d)) for d in TABLE_DTYPES), s.origin] for s in specs]
    return table(headers, rows)


def _local_lines(local: tuple[GpuSpec, ...], probe: nvml.ProbeResult) -> list[str]:
    if not local:
        return [f"No local GPU found ({probe.error or 'no GPU detected'})."]
    versions = f"driver {probe.driver_version or '?'}, CUDA driver {probe.cuda_driver_version or '?'}"
    lines = [f"Local GPUs ({versions}):"]
    for spec in local:
        how = "peaks derived from SM count x clock" if spec.origin == "derived" else "matched to the database"
        lines.append(f"  local:{spec.local_index}  {spec.name}: usable {human_bytes(spec.usable_memory_bytes)} "
                     f"of {human_bytes(spec.memory_bytes)} total, {spec.bandwidth_gbs:,.0f} GB/s, "
                     f"fp32 {_tflops(spec.peak_tflops.get('fp32'))} TF ({how})")
    return lines


def run(args: argparse.Namespace) -> int:
    probe = nvml.probe()
    database = catalog.database()
    local = catalog.local_gpus()
    if args.json:
        document = {
            "local": [gpu_json(s) for s in local],
            "local_error": probe.error,
            "driver_version": probe.driver_version,
            "cuda_driver_version": probe.cuda_driver_version,
        }
        if not args.local:
            document["database"] = [gpu_json(s) for s in database]
        print(dump_json(document))
        return 0
    print("\n".join(_local_lines(local, probe)))
    if not args.local:
        print()
        print(f"GPU database ({len(database)} GPUs; dense peak TFLOPS, FP32 accumulate; "
              f"user file: {_user_file_note()}):")
        print(_database_table(database))
    return 0


def _user_file_note() -> str:
    from torchbudget.hardware.user_file import user_file_path

    path = user_file_path()
    return str(path) if path.exists() else f"none ({path})"
