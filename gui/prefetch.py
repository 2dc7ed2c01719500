"""A first launch's traces, made in a second process: ``python -m torchbudget.gui.prefetch``.

On a launch whose workload is not in the trace store yet, PyTorch, torch._dynamo and torchvision take
~2.5 s to import on the 2-core machine, and in the app's process that import holds the GIL against Qt.
The child is started first thing at launch and imports them on the other core while the app decides what
it needs; it then reads one workload (a JSON line on stdin; end of input: nothing to do), traces it and
writes each trace into the store (engine.trace_store). The window opens meanwhile, without PyTorch, and
loads each trace from the store as the child reports it. The child traces the workload, then the batch-1
and batch-2 anchors the largest batch is solved from, and records the model list. No Qt here, and the
parent side (``Prefetch``) imports no torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Callable

from torchbudget.engine.results import AnalysisResult
from torchbudget.engine.trace_store import CACHE_DIR_ENV, TraceStore
from torchbudget.engine.workload import Workload

WAIT_LIMIT_S = 120.0   # a child that takes longer than this is not waited for: the caller traces itself


def planned(workload: Workload) -> list[Workload]:
    """What the child traces, in order: the workload first (its verdict), then the batch anchors."""
    out: list[Workload] = []
    for item in (workload, workload.with_batch(1), workload.with_batch(2)):
        if item.key() not in {w.key() for w in out}:
            out.append(item)
    return out


class Prefetch:
    """Parent side: starts the child, hands it the workload, and lets the trace cache wait for what the
    child is about to store."""

    def __init__(self, store: TraceStore):
        self.store = store
        self._expected: set[str] = set()
        self._stored: set[str] = set()
        self._finished = False
        self._changed = threading.Condition()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        env[CACHE_DIR_ENV] = str(store.directory)   # the child writes where this process reads
        self.process = subprocess.Popen([sys.executable, "-m", "torchbudget.gui.prefetch"], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, name="torchbudget-prefetch", daemon=True).start()

    def request(self, workload: Workload) -> None:
        """Trace ``workload`` (and its batch anchors) in the child."""
        with self._changed:
            self._expected = {self.store.path_for(w).name for w in planned(workload)}
        try:
            self.process.stdin.write(json.dumps(workload.to_dict()) + "\n")
            self.process.stdin.close()
        except OSError:   # the child is gone: everything is traced here instead
            self.stop()

    def _read(self):
        for line in self.process.stdout:
            word, _, name = line.strip().partition(" ")
            if word == "stored":
                with self._changed:
                    self._stored.add(name)
                    self._changed.notify_all()
        self.process.wait()
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def wait_for(self, workload: Workload, timeout_s: float = WAIT_LIMIT_S) -> None:
        """Until the child has stored ``workload`` or ended (at once for a workload it does not trace)."""
        name = self.store.path_for(workload).name
        with self._changed:
            if name in self._expected:
                self._changed.wait_for(lambda: name in self._stored or self._finished, timeout_s)

    def wait(self, timeout_s: float = WAIT_LIMIT_S) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._finished, timeout_s)

    def analyzer(self, trace_here: Callable[[Workload], AnalysisResult]) -> Callable[[Workload], AnalysisResult]:
        """For TraceCache: what the child is tracing is waited for and loaded; the rest is traced here."""
        def analyze(workload: Workload) -> AnalysisResult:
            self.wait_for(workload)
            stored = self.store.load(workload)
            return stored if stored is not None else trace_here(workload)
        return analyze

    def stop(self) -> None:
        """Ends the child (not needed, or the app is closing); waiters stop waiting."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        with self._changed:
            self._finished = True
            self._changed.notify_all()


def main() -> int:
    import torchbudget.engine.api  # noqa: F401 - PyTorch, torchvision and the tracer: the slow part, done while the
    from torchbudget.engine.cache import TraceCache  # app decides whether it needs this process at all
    from torchbudget.engine.errors import UserError
    from torchbudget.engine.process import freeze_startup_objects

    freeze_startup_objects()   # this process is ours
    line = sys.stdin.readline()
    if not line.strip():
        return 0   # the app found what it needed in the store
    workload = Workload.from_dict(json.loads(line))
    store = TraceStore()
    cache = TraceCache(store=store)
    for item in planned(workload):
        try:
            cache.get(item)
        except UserError:
            return 1   # the window's own request reports the error in place
        cache.flush()
        print("stored", store.path_for(item).name, flush=True)
    from torchbudget.gui.backend import model_names

    model_names()   # listed now that torchvision is imported, and stored for the window
    return 0


if __name__ == "__main__":
    sys.exit(main())
