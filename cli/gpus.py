"""`torchbudget gpus [--local] [--interconnects] [--json]`: local GPUs (live memory), then the spec database; or
the interconnect table."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options, emit
from torchbudget.engine.report.schema import dump_json, gpu_to_dict, interconnect_to_dict
from torchbudget.engine.report.text import render_gpu_table, render_interconnect_table, render_local_gpus
from torchbudget.hardware import catalog, interconnect, nvml


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gpus", parents=[common_options()],
        help="list local GPUs and the GPU spec database",
        description="Local GPUs first (live free/total memory from NVML, matched database entry or derived "
                    "peaks), then every GPU in the database. Peaks are dense TFLOPS; memory in GiB (2**30 B); "
                    "bandwidth in GB/s (1e9 B/s).")
    parser.add_argument("--local", action="store_true", help="only the GPUs in this machine")
    parser.add_argument("--interconnects", action="store_true",
                        help="list the links between GPUs instead (NVLink, Infinity Fabric, PCIe, InfiniBand, RoCE): "
                             "GB/s per GPU and direction, the share NCCL reaches, latency per collective")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.interconnects:
        return _run_interconnects(args)
    probe = nvml.probe()
    database = catalog.database()
    local = catalog.local_gpus()
    if args.json:
        document = {
            "local": [gpu_to_dict(s) for s in local],
            "local_error": probe.error,
            "driver_version": probe.driver_version,
            "cuda_driver_version": probe.cuda_driver_version,
        }
        if not args.local:
            document["database"] = [gpu_to_dict(s) for s in database]
        emit(args, dump_json(document))
        return 0
    emit(args, render_local_gpus(local, probe))
    if not args.local:
        emit(args, "")
        emit(args, f"GPU database ({len(database)} GPUs; dense peak TFLOPS, FP32 accumulate; "
                   f"user file: {_user_file_note()}):")
        emit(args, render_gpu_table(database))
    return 0


def _run_interconnects(args: argparse.Namespace) -> int:
    links = interconnect.interconnects()
    inter = interconnect.default_inter_node().name
    if args.json:
        emit(args, dump_json({"interconnects": [interconnect_to_dict(link) for link in links],
                              "default_inter_node": inter}))
        return 0
    emit(args, f"Interconnects ({len(links)}; per GPU and direction, GB/s = 1e9 B/s; bus GB/s = GB/s x the "
               f"efficiency NCCL reaches; default between nodes: {inter}; user file: {_user_file_note()}):")
    emit(args, render_interconnect_table(links))
    return 0


def _user_file_note() -> str:
    from torchbudget.hardware.user_file import user_file_path

    path = user_file_path()
    return str(path) if path.exists() else f"none ({path})"
