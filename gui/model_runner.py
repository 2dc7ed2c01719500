"""Runs user ``.py`` models in ``gui.model_process`` children (QProcess), one fresh process per analysis and
never more than one running the user's code at a time. A warm child (PyTorch already imported) waits in
standby so the user does not wait for imports. The child replies in stages: the verdict's traces
(``finished``), then the sweeps (``sweeps``). Each stage has the timeout, counted from when the child is
ready or the previous stage arrived; a hung child is killed. A child that fails after its verdict costs only
the sweeps (``sweepsFailed``), never the verdict."""
from __future__ import annotations

import json
import os
import sys

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from torchbudget.engine.errors import ModelLoadError
from torchbudget.engine.workload import Workload
from torchbudget.gui.model_process import MEMORY_LIMIT_ENV, READY

DEFAULT_TIMEOUT_S = 120.0
STARTUP_TIMEOUT_S = 180.0
DEFAULT_MEMORY_LIMIT_BYTES = 16 * 2**30


class _Child:
    """One ``--serve-one`` process and what it has said so far."""

    def __init__(self, parent: QObject, memory_limit_bytes: int):
        self.process = QProcess(parent)
        env = QProcessEnvironment.systemEnvironment()
        env.insert(MEMORY_LIMIT_ENV, str(memory_limit_bytes))
        import torchbudget

        root = os.path.dirname(os.path.dirname(os.path.abspath(torchbudget.__file__)))   # where torchbudget lives
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (root, env.value("PYTHONPATH")) if p))
        self.process.setProcessEnvironment(env)
        self.stdout = ""
        self.ready = False
        self.handled = 0   # complete stdout lines already looked at
        self.process.start(sys.executable, ["-m", "torchbudget.gui.model_process", "--serve-one"])

    def read(self) -> None:
        self.stdout += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        if not self.ready and (READY + "\n") in self.stdout:
            self.ready = True

    def new_replies(self) -> list[dict]:
        """JSON replies on complete lines not returned before."""
        lines = self.stdout.split("\n")[:-1]   # the last piece is not a complete line yet
        fresh, self.handled = lines[self.handled:], len(lines)
        replies = []
        for line in fresh:
            line = line.strip()
            if line.startswith("{"):
                try:
                    replies.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return replies

    def kill(self) -> None:
        self.process.blockSignals(True)
        self.process.kill()
        self.process.waitForFinished(2000)
        self.process.deleteLater()


class ModelProcessRunner(QObject):
    finished = Signal(object, object, object)   # (workload, AnalysisResult, [(workload, AnalysisResult)] for
    #                                              the GPUs' targets): the verdict's traces
    sweeps = Signal(object, object, object)     # (workload, GPUs, sweeps dict from gui.child_sweeps)
    sweepsFailed = Signal(object, str)          # (workload, why): the verdict already arrived
    failed = Signal(object, object)             # (workload, UserError): no verdict

    def __init__(self, parent=None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES):
        super().__init__(parent)
        self.timeout_s = timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        self.started = 0   # analyses started (tests: one file never runs in several processes at once)
        self._standby: _Child | None = None
        self._active: _Child | None = None
        self._workload: Workload | None = None
        self._gpus: tuple = ()
        self._got_result = False
        self._timed_out = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timeout)

    @property
    def running(self) -> bool:
        return self._active is not None

    def warm_up(self) -> None:
        """Start a standby child now (e.g. when the user opens a .py file)."""
        if self._standby is None:
            self._standby = _Child(self, self.memory_limit_bytes)

    def start(self, workload: Workload, gpus=()) -> None:
        """Analyse ``workload``; with ``gpus`` also solve the largest batch and sweep (gui.child_sweeps).
        A running analysis is stopped first (its process killed): one process runs user code at a time."""
        from torchbudget.engine.report.schema import gpu_to_dict

        self.cancel()
        self.warm_up()
        child, self._standby = self._standby, None
        self._active, self._workload, self._gpus = child, workload, tuple(gpus)
        self._got_result = self._timed_out = False
        self.started += 1
        child.process.readyReadStandardOutput.connect(lambda c=child: self._on_output(c))
        child.process.finished.connect(lambda code, status, c=child: self._on_finished(c, code, status))
        child.process.errorOccurred.connect(lambda err, c=child: self._on_error(c, err))
        request = {"workload": workload.to_dict(), "gpus": [gpu_to_dict(g) for g in gpus]}
        child.process.write((json.dumps(request) + "\n").encode("utf-8"))
        child.read()
        self._timer.start(int((self.timeout_s if child.ready else STARTUP_TIMEOUT_S) * 1000))

    def cancel(self) -> None:
        """Stop the running child (if any) without reporting anything."""
        child, self._active = self._active, None
        self._timer.stop()
        if child is not None:
            child.kill()

    def shutdown(self) -> None:
        self.cancel()
        if self._standby is not None:
            self._standby.kill()
            self._standby = None

    def _on_output(self, child: _Child):
        was_ready = child.ready
        child.read()
        if child is not self._active:
            return
        if child.ready and not was_ready:
            self._timer.start(int(self.timeout_s * 1000))   # the user's code starts running now
        for reply in child.new_replies():
            if child is not self._active:
                break
            self._handle(reply)

    def _handle(self, reply: dict) -> None:
        workload = self._workload
        if not reply.get("ok"):
            if self._got_result:
                self._done()
                self.sweepsFailed.emit(workload, reply.get("error") or "the sweeps failed")
                return
            error = ModelLoadError(reply.get("error") or "analysis failed")
            error.field = reply.get("field") or "model"
            self._fail(error)
            return
        if reply.get("stage", "result") == "result":
            try:
                from torchbudget.engine.serialize import result_from_dict

                result = result_from_dict(reply["result"])
                per_target = [(Workload.from_dict(item["workload"]), result_from_dict(item["result"]))
                              for item in reply.get("results") or ()]
            except Exception as exc:  # noqa: BLE001 - a malformed reply is reported, not raised
                self._fail(ModelLoadError(f"could not read the analysis result: {exc}"))
                return
            self._got_result = True
            if self._gpus:
                self._timer.start(int(self.timeout_s * 1000))   # the sweeps get their own time
            else:
                self._done()
            self.finished.emit(workload, result, per_target)
        elif reply.get("stage") == "sweeps":
            gpus = self._gpus
            self._done()
            self.sweeps.emit(workload, gpus, reply.get("sweeps") or {})

    def _on_timeout(self):
        if self._active is None:
            return
        if self._got_result:
            workload = self._workload
            self._done()
            self.sweepsFailed.emit(workload, f"the sweeps took longer than {self.timeout_s:g} s and were stopped")
            return
        self._timed_out = True
        self._active.process.kill()   # finished() follows and reports the timeout

    def _on_error(self, child, error):
        if child is self._active and error == QProcess.ProcessError.FailedToStart:
            self._fail(ModelLoadError(f"could not start the analysis process: {child.process.errorString()}"))

    def _on_finished(self, child: _Child, code, status):
        if child is not self._active:
            return
        child.read()
        for reply in child.new_replies():   # what it said just before it ended
            if child is not self._active:
                return
            self._handle(reply)
        if child is not self._active:
            return
        stderr = bytes(child.process.readAllStandardError()).decode("utf-8", "replace")
        tail = (stderr.strip().splitlines()[-1:] or [""])[0]
        how = "crashed" if status == QProcess.ExitStatus.CrashExit else f"exited with code {code}"
        if self._got_result:
            workload = self._workload
            self._done()
            self.sweepsFailed.emit(workload, f"the model's process {how} during the sweeps {tail}".strip())
            return
        if self._timed_out:
            self._fail(ModelLoadError(f"the model took longer than {self.timeout_s:g} s to analyse and was stopped"))
            return
        self._fail(ModelLoadError(f"the model file {how} during analysis {tail}".strip()))

    def _fail(self, error):
        workload = self._workload
        self._done()
        self.failed.emit(workload, error)

    def _done(self):
        """The analysis is over (answered, failed or stopped): its process goes, a warm one waits."""
        self._timer.stop()
        child, self._active = self._active, None
        if child is not None:
            child.kill()
        self.warm_up()   # the next analysis finds a warm process
