"""``plan MODEL --gpu NAME``: does it fit, with what headroom, the largest batch, and how fast it can run."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options, emit
from torchbudget.cli.workload_args import (AUTO, add_cluster_arguments, add_planner_arguments,
                                           add_workload_arguments, cluster_from_args, overheads_from_args,
                                           resolve_gpus, strategies_from_args, tp_from_args, trace_cache_from_args,
                                           workload_from_args)
from torchbudget.engine.report.schema import dump_json, fewest_to_dict, plan_to_dict
from torchbudget.engine.report.text import render_fewest, render_plan
from torchbudget.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", parents=[common_options()], help="will it fit on this GPU, the largest batch, roofline latency",
        description="Plan one workload on one GPU (traced for that GPU's kernels): memory breakdown at the peak, "
                    "fit verdict, largest batch that fits, roofline lower bound and realistic latency estimate.")
    add_workload_arguments(parser)
    add_planner_arguments(parser)
    add_cluster_arguments(parser)
    parser.add_argument("--gpu", required=True, metavar="NAME", help="GPU name or alias, or 'local'")
    parser.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search")
    parser.add_argument("--no-max-seq-len", action="store_true",
                        help="token models: skip the longest-sequence search (default: solved with the largest batch)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.planner import Planner

    auto = args.world_size == AUTO
    workload = workload_from_args(args, several=auto)
    gpus = resolve_gpus(args.gpu)
    if len(gpus) != 1:
        raise UserError("plan takes one GPU; use the compare command for several", field="gpu")
    planner = Planner(trace_cache_from_args(args), overheads=overheads_from_args(args))
    cluster = cluster_from_args(args)
    if auto:
        return _fewest(args, planner, workload, gpus[0], cluster)
    result = planner.plan(workload, gpus[0], solve_max_batch=not args.no_max_batch,
                          solve_max_seq_len=not args.no_max_seq_len, cluster=cluster)
    emit(args, dump_json(plan_to_dict(result)) if args.json else render_plan(result))
    return 0


def _fewest(args: argparse.Namespace, planner, workload, gpu, cluster) -> int:
    """--world-size auto: the fewest GPUs per strategy, then the plan of the strategy needing the fewest (among
    equals the fastest step), solved as an ordinary plan."""
    from torchbudget.engine.distributed.solve import best_of, search_fewest, state_guess

    guess = state_guess(workload, gpu)
    searches = [search_fewest(planner, workload, gpu, name, tp_size=tp_from_args(args), cluster=cluster,
                              guess=guess) for name in strategies_from_args(args)]
    best = best_of(searches)
    plan = None
    if best is not None:
        plan = planner.plan(best.plan.workload, gpu, solve_max_batch=not args.no_max_batch,
                            solve_max_seq_len=not args.no_max_seq_len, cluster=cluster)
    if args.json:
        emit(args, dump_json({**fewest_to_dict(searches, best), "plan": plan_to_dict(plan) if plan else None}))
    else:
        emit(args, render_fewest(searches, best) + ("\n\n" + render_plan(plan) if plan else ""))
    return 0
