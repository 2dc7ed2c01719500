"""Runs user ``.py`` models in ``gui.model_process`` children (QProcess), one fresh process per analysis.
A warm child (PyTorch already imported) waits in standby so the user does not wait for imports; the
timeout starts once the child is ready, and a hung child is killed. Results and errors arrive as signals."""
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
        self.process.start(sys.executable, ["-m", "torchbudget.gui.model_process", "--serve-one"])

    def read(self) -> None:
        self.stdout += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        if not self.ready and (READY + "\n") in self.stdout:
            self.ready = True

    def kill(self) -> None:
        self.process.blockSignals(True)
        self.process.kill()
        self.process.waitForFinished(2000)
        self.process.deleteLater()


class ModelProcessRunner(QObject):
    finished = Signal(object, object, object, object)   # (workload, AnalysisResult, sweeps dict or None,
    #                                                      [(workload, AnalysisResult)] for the GPUs' targets)
    failed = Signal(object, object)     # (workload, UserError)

    def __init__(self, parent=None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES):
        super().__init__(parent)
        self.timeout_s = timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        self._standby: _Child | None = None
        self._active: _Child | None = None
        self._workload: Workload | None = None
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
        """Analyse ``workload``; with ``gpus`` also solve the largest batch and sweep (gui.child_sweeps)."""
        from torchbudget.engine.report.schema import gpu_to_dict

        self.cancel()
        self.warm_up()
        child, self._standby = self._standby, None
        self._active, self._workload, self._timed_out = child, workload, False
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
        if child is self._active and child.ready and not was_ready:
            self._timer.start(int(self.timeout_s * 1000))   # the user's code starts running now

    def _on_timeout(self):
        if self._active is not None:
            self._timed_out = True
            self._active.process.kill()   # finished() follows and reports the timeout

    def _on_error(self, child, error):
        if child is self._active and error == QProcess.ProcessError.FailedToStart:
            self._fail(ModelLoadError(f"could not start the analysis process: {child.process.errorString()}"))

    def _on_finished(self, child: _Child, code, status):
        if child is not self._active:
            return
        child.read()
        stderr = bytes(child.process.readAllStandardError()).decode("utf-8", "replace")
        if self._timed_out:
            self._fail(ModelLoadError(f"the model took longer than {self.timeout_s:g} s to analyse and was stopped"))
            return
        reply = _last_json_line(child.stdout)
        if reply is None:
            tail = stderr.strip().splitlines()[-1:] or [""]
            how = "crashed" if status == QProcess.ExitStatus.CrashExit else f"exited with code {code}"
            self._fail(ModelLoadError(f"the model file {how} during analysis {tail[0]}".strip()))
            return
        if not reply.get("ok"):
            error = ModelLoadError(reply.get("error") or "analysis failed")
            error.field = reply.get("field") or "model"
            self._fail(error)
            return
        try:
            from torchbudget.engine.serialize import result_from_dict
            from torchbudget.engine.workload import Workload

            result = result_from_dict(reply["result"])
            per_target = [(Workload.from_dict(item["workload"]), result_from_dict(item["result"]))
                          for item in reply.get("results") or ()]
        except Exception as exc:  # noqa: BLE001 - a malformed reply is reported, not raised
            self._fail(ModelLoadError(f"could not read the analysis result: {exc}"))
            return
        workload = self._workload
        self._cleanup()
        self.finished.emit(workload, result, reply.get("sweeps"), per_target)

    def _fail(self, error):
        workload = self._workload
        self._cleanup()
        self.failed.emit(workload, error)

    def _cleanup(self):
        self._timer.stop()
        if self._active is not None:
            self._active.process.deleteLater()
        self._active = None
        self.warm_up()   # the next analysis finds a warm process


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
