"""Runs one analysis of a user's ``.py`` model in its own process, so that a crash, a hang or a memory
blow-up in their code cannot take the window down. Usage: ``python -m gui.model_process '<workload json>'``.
Prints one JSON line: ``{"ok": true, "result": result_to_dict(...)}`` or ``{"ok": false, "error": ..., "field": ...}``."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback

# Virtual address-space cap for user code (bytes); the GUI sets it, 0 = no cap.
MEMORY_LIMIT_ENV = "TORCHBUDGET_CHILD_MEMORY_BYTES"


def _limit_memory() -> None:
    limit = int(os.environ.get(MEMORY_LIMIT_ENV, "0") or 0)
    if limit <= 0:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not available on this platform: the GUI's timeout still protects the window


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(json.dumps({"ok": False, "error": "usage: python -m gui.model_process '<workload json>'", "field": None}))
        return 2
    from engine.errors import UserError
    from engine.workload import Workload

    try:
        workload = Workload.from_json(argv[0])
        _limit_memory()
        from engine.api import analyze_workload
        from engine.serialize import result_to_dict

        with contextlib.redirect_stdout(sys.stderr):  # the user's prints must not corrupt our JSON line
            result = analyze_workload(workload)
        reply = {"ok": True, "result": result_to_dict(result)}
    except UserError as exc:
        reply = {"ok": False, "error": str(exc), "field": exc.field}
    except MemoryError:
        reply = {"ok": False, "error": "the model ran out of memory while loading or tracing", "field": "model"}
    except BaseException as exc:  # noqa: BLE001 - whatever user code raises becomes a message
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        reply = {"ok": False, "error": f"the model raised {detail}", "field": "model"}
    sys.stdout.write("\n" + json.dumps(reply) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
