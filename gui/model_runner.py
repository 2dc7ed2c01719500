"""Runs ``gui.model_process`` in a QProcess for user ``.py`` models, with a timeout that kills a hung
child. Delivers an AnalysisResult or a UserError through signals; the window never blocks on it."""
from __future__ import annotations

import json
import os
import sys

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from engine.errors import ModelLoadError
from engine.workload import Workload
from gui.model_process import MEMORY_LIMIT_ENV

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MEMORY_LIMIT_BYTES = 16 * 2**30


def is_user_file_model(model: str) -> bool:
    path = model.split(":", 1)[0]
    return path.endswith(".py")


class ModelProcessRunner(QObject):
    finished = Signal(object, object)   # (workload, AnalysisResult)
    failed = Signal(object, object)     # (workload, UserError)

    def __init__(self, parent=None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES):
        super().__init__(parent)
        self.timeout_s = timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        self._process: QProcess | None = None
        self._workload: Workload | None = None
        self._timed_out = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timeout)

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self, workload: Workload) -> None:
        self.cancel()
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert(MEMORY_LIMIT_ENV, str(self.memory_limit_bytes))
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (root, env.value("PYTHONPATH")) if p))
        process.setProcessEnvironment(env)
        process.finished.connect(lambda code, status, p=process: self._on_finished(p, code, status))
        process.errorOccurred.connect(lambda err, p=process: self._on_error(p, err))
        self._process, self._workload, self._timed_out = process, workload, False
        process.start(sys.executable, ["-m", "gui.model_process", workload.to_json()])
        self._timer.start(int(self.timeout_s * 1000))

    def cancel(self) -> None:
        """Stop the child (if any) without reporting anything."""
        process, self._process = self._process, None
        self._timer.stop()
        if process is not None:
            process.blockSignals(True)
            process.kill()
            process.waitForFinished(1000)
            process.deleteLater()

    def _on_timeout(self):
        if self._process is not None:
            self._timed_out = True
            self._process.kill()   # finished() follows and reports the timeout

    def _on_error(self, process, error):
        if process is self._process and error == QProcess.ProcessError.FailedToStart:
            self._fail(ModelLoadError(f"could not start the analysis process: {process.errorString()}"))

    def _on_finished(self, process, code, status):
        if process is not self._process:
            return
        stdout = bytes(process.readAllStandardOutput()).decode("utf-8", "replace")
        stderr = bytes(process.readAllStandardError()).decode("utf-8", "replace")
        if self._timed_out:
            self._fail(ModelLoadError(f"the model took longer than {self.timeout_s:g} s to analyse and was stopped"))
            return
        reply = _last_json_line(stdout)
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
            from engine.serialize import result_from_dict

            result = result_from_dict(reply["result"])
        except Exception as exc:  # noqa: BLE001 - a malformed reply is reported, not raised
            self._fail(ModelLoadError(f"could not read the analysis result: {exc}"))
            return
        workload = self._workload
        self._cleanup()
        self.finished.emit(workload, result)

    def _fail(self, error):
        workload = self._workload
        self._cleanup()
        self.failed.emit(workload, error)

    def _cleanup(self):
        self._timer.stop()
        if self._process is not None:
            self._process.deleteLater()
        self._process = None


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
