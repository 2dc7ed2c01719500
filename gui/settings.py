"""Persistent settings (QSettings): the last workload, recent models, ticked GPUs, window geometry.
Tests and screenshots point TORCHBUDGET_SETTINGS at a temporary .ini file so they never touch the user's."""
from __future__ import annotations

import os

from PySide6.QtCore import QSettings

from torchbudget.engine.errors import UserError
from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.workload import Workload

RECENT_LIMIT = 8
DEFAULT_WORKLOAD = Workload("resnet50", parse_inputs("1x3x224x224"), TraceOptions())


def first_workload(settings: "Settings") -> Workload:
    """The workload a new window asks about first (gui.app looks it up or traces it ahead of the window)."""
    from torchbudget.gui.workload_panel import as_shown

    return as_shown(settings.last_workload() or DEFAULT_WORKLOAD)


class Settings:
    def __init__(self, path: str | None = None):
        path = path or os.environ.get("TORCHBUDGET_SETTINGS")
        if path:
            self._qs = QSettings(path, QSettings.Format.IniFormat)
        else:
            self._qs = QSettings("TorchBudget", "TorchBudget")

    def last_workload(self) -> Workload | None:
        text = self._qs.value("workload/last", "", str)
        if not text:
            return None
        try:
            return Workload.from_json(text)
        except (UserError, ValueError, TypeError):
            return None  # a stale or hand-edited entry: fall back to the default workload

    def set_last_workload(self, workload: Workload) -> None:
        self._qs.setValue("workload/last", workload.to_json())

    def recent_models(self) -> list[str]:
        value = self._qs.value("workload/recent_models", [], list)
        return [str(v) for v in (value or [])]

    def add_recent_model(self, model: str) -> None:
        recent = [m for m in self.recent_models() if m != model]
        self._qs.setValue("workload/recent_models", [model, *recent][:RECENT_LIMIT])

    def ticked_gpus(self) -> list[str]:
        return [str(v) for v in (self._qs.value("hardware/ticked", [], list) or [])]

    def set_ticked_gpus(self, names: list[str]) -> None:
        self._qs.setValue("hardware/ticked", list(names))

    def primary_gpu(self) -> str:
        return self._qs.value("hardware/primary", "", str)

    def set_primary_gpu(self, name: str) -> None:
        self._qs.setValue("hardware/primary", name)

    def geometry(self):
        return self._qs.value("window/geometry")

    def set_geometry(self, data) -> None:
        self._qs.setValue("window/geometry", data)

    def sync(self) -> None:
        self._qs.sync()
