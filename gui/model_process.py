"""Runs one analysis of a user's ``.py`` model in its own process, so that a crash, a hang or a memory
blow-up in their code cannot take the window down.

``python -m torchbudget.gui.model_process '<workload json>'`` analyses that workload. ``--serve-one`` imports PyTorch
first, prints ``READY``, then reads one JSON line from stdin: a workload, or ``{"workload": ..., "gpus":
[GpuSpec dicts]}`` to get the largest batches and sweeps too (the GUI keeps such a warm process in
standby, so the user does not wait for the imports).

Replies are JSON lines on stdout, the verdict's first: ``{"ok": true, "stage": "result", "result":
result_to_dict(...), "results": [the trace for each GPU's target]}`` as soon as those traces exist, then,
when GPUs were given, ``{"ok": true, "stage": "sweeps", "sweeps": ...}``. A model that is slow to trace
(one calling ``.tolist()`` on its input, say) thus shows its verdict long before its sweeps are done.
A failure is ``{"ok": false, "stage": ..., "error": ..., "field": ...}``."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback

MEMORY_LIMIT_ENV = "TORCHBUDGET_CHILD_MEMORY_BYTES"   # address-space cap for user code, 0 = none
READY = "READY"


def _limit_memory() -> None:
    limit = int(os.environ.get(MEMORY_LIMIT_ENV, "0") or 0)
    if limit <= 0:
        return
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass  # not available on this platform: the GUI's timeout still protects the window


def analyse(request_json: str):
    """Yields the replies, verdict first (see the module's docstring)."""
    from torchbudget.engine.errors import UserError

    stage = "result"
    try:
        from torchbudget.engine.cache import TraceCache
        from torchbudget.engine.serialize import result_to_dict
        from torchbudget.engine.workload import Workload
        from torchbudget.engine.report.schema import gpu_from_dict
        from torchbudget.gui.child_sweeps import results_for, sweeps_for

        request = json.loads(request_json)
        if "workload" not in request:
            request = {"workload": request, "gpus": []}
        workload = Workload.from_dict(request["workload"])
        gpus = [gpu_from_dict(g) for g in request.get("gpus") or []]
        _limit_memory()
        cache = TraceCache()   # this process may trace the user's code as often as the sweeps need
        with contextlib.redirect_stdout(sys.stderr):  # the user's prints must not corrupt our JSON lines
            result = cache.get(workload)
            per_target = results_for(workload, gpus, cache)
        yield {"ok": True, "stage": "result", "result": result_to_dict(result, include_ops=True, include_events=True),
               "results": [{"workload": w, "result": result_to_dict(r)} for w, r in per_target]}
        if not gpus:
            return
        stage = "sweeps"
        with contextlib.redirect_stdout(sys.stderr):
            sweeps = sweeps_for(workload, gpus, cache)
        yield {"ok": True, "stage": "sweeps", "sweeps": sweeps}
    except UserError as exc:
        yield {"ok": False, "stage": stage, "error": str(exc), "field": exc.field}
    except json.JSONDecodeError as exc:
        yield {"ok": False, "stage": stage, "error": f"malformed request: {exc}", "field": None}
    except MemoryError:
        yield {"ok": False, "stage": stage, "error": "the model ran out of memory while loading or tracing",
               "field": "model"}
    except BaseException as exc:  # noqa: BLE001 - whatever user code raises becomes a message
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        yield {"ok": False, "stage": stage, "error": f"the model raised {detail}", "field": "model"}


def _reply(reply: dict) -> None:
    sys.stdout.write("\n" + json.dumps(reply) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if argv == ["--serve-one"]:
        import torchbudget.engine.api  # noqa: F401 - the slow imports happen before the GUI needs us
        import torchbudget.gui.backend  # noqa: F401

        sys.stdout.write(READY + "\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line.strip():
            return 0   # the GUI closed without asking anything
        for reply in analyse(line):
            _reply(reply)
        return 0
    if len(argv) != 1:
        _reply({"ok": False, "error": "usage: python -m torchbudget.gui.model_process '<workload json>' | --serve-one",
                "field": None})
        return 2
    for reply in analyse(argv[0]):
        _reply(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
