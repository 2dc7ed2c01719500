"""The JSON documents of TorchBudget (``--json``, the GUI's exports, the model process's replies): one
encoder (engine.serialize.to_plain), strict JSON (a NaN or infinite value is written as null and named in
``json_notes``), and the way back for the documents that travel between processes (sweeps, GPUs)."""
from __future__ import annotations

import json
import math

from torchbudget.engine.serialize import from_plain, result_to_dict, to_plain
from torchbudget.engine.solver import Sweep
from torchbudget.hardware.spec import GpuSpec


# ------------------------------------------------------------------------------------------ strict JSON
def _finite(value, path: str, notes: list[str]):
    if isinstance(value, float) and not math.isfinite(value):
        notes.append(f"{path or 'value'}: {value} is not a JSON number; written as null")
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), notes) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, f"{path}[{i}]", notes) for i, v in enumerate(value)]
    return value


def jsonable(obj) -> object:
    """Plain JSON data: dataclasses/enums/mappings via to_plain, non-finite floats as null (and, for a
    document that is an object, a ``json_notes`` entry naming each)."""
    notes: list[str] = []
    data = _finite(to_plain(obj), "", notes)
    if notes and isinstance(data, dict):
        data["json_notes"] = data.get("json_notes", []) + notes
    return data


def dump_json(obj) -> str:
    """Strict JSON text (never NaN or Infinity)."""
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)


# ----------------------------------------------------------------------------------------------- plan
def plan_to_dict(plan) -> dict:
    memory, latency = plan.memory, plan.latency
    return {
        "model": plan.result.model_name if plan.result else (plan.workload.model if plan.workload else ""),
        "workload": plan.workload.to_dict() if plan.workload else None,
        "inputs": [s.text() for s in plan.result.inputs] if plan.result else [],
        "target": plan.result.options.target if plan.result else None,
        "gpu": {"name": plan.gpu.name, "available_memory_bytes": plan.capacity_bytes,
                "compute_capability": plan.gpu.compute_capability},
        "verdict": plan.verdict.value,
        "fits": plan.fits,
        "required_bytes": plan.required_bytes,
        "headroom_bytes": plan.headroom_bytes,
        "headroom_fraction": plan.headroom_fraction,
        "dominant_category": plan.dominant_category.value,
        "max_batch": plan.max_batch,
        "max_seq_len": plan.max_seq_len,
        "notes": list(plan.notes),
        "memory": {
            "peak_bytes": memory.peak_bytes,
            "allocated_peak_bytes": memory.allocated_peak_bytes,
            "reserved_peak_bytes": memory.reserved_peak_bytes,
            "fragmentation_bytes": memory.fragmentation_bytes,
            "segments": memory.segments,
            "trace_peak_bytes": memory.trace_peak_bytes,
            "iteration1_peak_bytes": memory.iteration1_peak_bytes,
            "steady_state_peak_bytes": memory.steady_state_peak_bytes,
            "peak_module": memory.peak_module,
            "peak_phase": memory.peak_phase.value if memory.peak_phase else None,
            "by_category": {c.value: n for c, n in memory.by_category.items()},
            "overheads": to_plain(memory.overheads),
        },
        "latency": {
            "lower_bound_ms": latency.lower_bound_ms,
            "estimate_ms": latency.estimate_ms,
            "forward": to_plain(latency.forward),
            "backward": to_plain(latency.backward),
            "optimizer": to_plain(latency.optimizer),
            "efficiency": to_plain(latency.efficiency),
        },
        "throughput": {
            "samples_per_s": latency.throughput_samples_per_s,
            "max_samples_per_s": latency.max_throughput_samples_per_s,
            "micro_batch": latency.batch_size,
            "grad_accum": latency.grad_accum,
            "global_batch": latency.global_batch,
        },
        "generation": generation_to_dict(plan.generation, plan.max_batch),
        "distributed": distributed_to_dict(plan),
    }


def distributed_to_dict(plan) -> dict | None:
    """Several GPUs (engine.distributed.plan): ``memory``, ``fits`` and ``max_batch`` above are per rank."""
    d = plan.distributed
    if d is None:
        return None
    c = d.comm
    return {
        "world_size": d.world_size, "strategy": d.strategy, "tp_size": d.tp_size, "dp_size": d.dp_size,
        "method": d.method, "cluster": d.cluster, "gpus_per_node": d.gpus_per_node,
        "intra_node": d.intra, "inter_node": d.inter,
        "per_rank_memory": {"peak_bytes": plan.memory.peak_bytes,
                            "by_category": {cat.value: n for cat, n in plan.memory.by_category.items()}},
        "collectives": [{"kind": t.call.kind, "bytes": t.call.nbytes, "group_size": t.call.group_size,
                         "group": t.call.group, "phase": t.call.phase.value, "module": t.call.module_path,
                         "link": t.link, "ms": t.ms, "blocking": t.blocking, "per_step": t.per_step}
                        for t in c.collectives],
        "by_kind": {k: {"calls": n, "bytes": b, "ms": ms} for k, (n, b, ms) in c.by_kind.items()},
        "compute_ms": c.compute_ms, "comm_time_ms": c.comm_ms, "exposed_comm_ms": c.exposed_ms,
        "overlapped_comm_ms": c.overlapped_ms, "step_ms": d.step_ms,
        "grad_accum": d.grad_accum, "global_batch": d.global_batch, "samples_per_s": d.samples_per_s,
        "tokens_per_s": d.tokens_per_s,
        "scaling_efficiency": d.scaling_efficiency, "notes": list(d.notes),
    }


def generation_to_dict(g, max_batch: int | None) -> dict | None:
    """A prefill/decode plan's figures (null for other modes); bytes and ms as everywhere."""
    if g is None:
        return None
    return {
        "mode": g.mode, "sequences": g.sequences, "new_tokens": g.new_tokens, "context_tokens": g.context_tokens,
        "tokens_per_step": g.tokens_per_step,
        "kv_cache_bytes": g.kv_cache_bytes, "kv_cache_bytes_before_step": g.kv_read_bytes,
        "weight_bytes": g.weight_bytes, "bandwidth_bound_ms": g.bandwidth_bound_ms,
        "step_bound_ms": g.step_bound_ms, "step_estimate_ms": g.step_estimate_ms,
        "time_to_first_token_ms": g.time_to_first_token_ms,
        "tokens_per_s": g.tokens_per_s, "max_tokens_per_s": g.max_tokens_per_s,
        "per_sequence_tokens_per_s": g.per_sequence_tokens_per_s,
        "max_concurrent_sequences": max_batch if g.mode == "decode" else None,
        "max_context": g.max_context,
        # several GPUs (tensor parallel): the bytes and solvers above are rank 0's; the step waits for this
        "world_size": g.world_size, "exposed_comm_ms": g.exposed_comm_ms,
    }


def comparison_row_to_dict(row) -> dict:
    return {"gpu": row.gpu_name, "verdict": row.verdict.value, "fits": row.fits,
            "capacity_bytes": row.capacity_bytes, "required_bytes": row.required_bytes,
            "headroom_bytes": row.headroom_bytes, "headroom_fraction": row.headroom_fraction,
            "max_batch": row.max_batch, "lower_bound_ms": row.lower_bound_ms, "estimate_ms": row.estimate_ms,
            "throughput_samples_per_s": row.throughput_samples_per_s, "plan": plan_to_dict(row.plan)}


def comparison_to_dict(comparison) -> dict:
    fastest = comparison.fastest()
    return {"workload": comparison.workload.to_dict(), "rows": [comparison_row_to_dict(r) for r in comparison.rows],
            "fastest": fastest.gpu_name if fastest else None}


# ------------------------------------------------------------------------------------------ several GPUs
def strategy_row_to_dict(row) -> dict:
    """A solve.StrategyRow, or a solve.FewestSearch (--world-size auto: the row of its plan, plus the search)."""
    from torchbudget.engine.distributed.solve import FewestSearch, row_of

    search = None
    if isinstance(row, FewestSearch):
        search = fewest_search_to_dict(row)
        if row.plan is None:
            return {"gpu": row.gpu_name, "strategy": row.strategy, "world_size": None, "fits": False,
                    "capacity_bytes": row.capacity_bytes, "fewest": search, "plan": None}
        row = row_of(row.plan)
    return {"gpu": row.gpu_name, "cluster": row.cluster, "strategy": row.strategy, "world_size": row.world_size,
            "tp_size": row.tp_size, "fits": row.fits, "per_rank_bytes": row.per_rank_bytes,
            "capacity_bytes": row.capacity_bytes, "step_ms": row.step_ms, "exposed_comm_ms": row.exposed_comm_ms,
            "samples_per_s": row.samples_per_s, "tokens_per_s": row.tokens_per_s,
            "scaling_efficiency": row.scaling_efficiency, "max_batch": row.max_batch,
            **({"fewest": search} if search else {}), "plan": plan_to_dict(row.plan)}


def distributed_comparison_to_dict(workload, rows) -> dict:
    out = [strategy_row_to_dict(r) for r in rows]
    fitting = [r for r in out if r["fits"]]
    best = max(fitting, key=lambda r: r["samples_per_s"]) if fitting else None
    return {"workload": workload.to_dict(), "rows": out,
            "fastest": {"cluster": best["cluster"], "strategy": best["strategy"]} if best else None}


def fewest_search_to_dict(search) -> dict:
    return {"strategy": search.strategy, "gpu": search.gpu_name, "world_size": search.world_size,
            "tried": [{"world_size": w, "per_rank_bytes": b, "fits": f} for w, b, f in search.tried],
            "reason": search.reason or None}


def fewest_to_dict(searches, best) -> dict:
    """--world-size auto: the fewest GPUs per strategy and the one chosen (its plan beside this)."""
    return {"fewest_gpus": [fewest_search_to_dict(s) for s in searches],
            "chosen": None if best is None else {"strategy": best.strategy, "world_size": best.world_size,
                                                 "gpu": best.gpu_name}}


# --------------------------------------------------------------------------------------- sweeps, GPUs
def sweep_to_dict(sweep: Sweep | None) -> dict | None:
    return None if sweep is None else to_plain(sweep)


def sweep_from_dict(data: dict | None) -> Sweep | None:
    return None if data is None else from_plain(Sweep, data)


def gpu_to_dict(spec: GpuSpec) -> dict:
    return to_plain(spec)


def interconnect_to_dict(link) -> dict:
    """An Interconnect as JSON, with the bus bandwidth it implies (bandwidth_gb_s x efficiency)."""
    return {**to_plain(link), "bus_bandwidth_gb_s": link.bus_bandwidth_gb_s}


def gpu_from_dict(data: dict) -> GpuSpec:
    return from_plain(GpuSpec, data)


def analysis_to_dict(result, *, include_ops: bool = False, include_events: bool = False) -> dict:
    return result_to_dict(result, include_ops=include_ops, include_events=include_events)
