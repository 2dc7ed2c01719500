"""Persistent settings (QSettings): the last workload and cluster, recent models, ticked GPUs, window geometry.
Tests and screenshots point TORCHBUDGET_SETTINGS at a temporary .ini file so they never touch the user's.

Whatever the file holds (hand edits, another version's values, binary junk), reading it never fails: a
value that does not make sense is left out, the default is used, and ``problems()`` says what was ignored
so the window can tell the user."""
from __future__ import annotations

import os

from PySide6.QtCore import QByteArray, QSettings

from torchbudget.engine.errors import UserError
from torchbudget.engine.workload import Workload
from torchbudget.gui.state import DEFAULT_WORKLOAD, check_workload

RECENT_LIMIT = 8


def first_workload(settings: "Settings") -> Workload:
    """The workload a new window asks about first (gui.app looks it up or traces it ahead of the window)."""
    return settings.last_workload() or DEFAULT_WORKLOAD


class Settings:
    def __init__(self, path: str | None = None):
        path = path or os.environ.get("TORCHBUDGET_SETTINGS")
        self._problems: dict[str, str] = {}
        self._qs = self._open(path)
        name = self._qs.fileName()
        if self._qs.status() != QSettings.Status.NoError:
            self._problems["file"] = f"settings file {name} could not be read; nothing is remembered this time"
        elif self._junk(name):
            # junk QSettings cannot parse (and would refuse to write over): kept aside, started afresh
            try:
                os.replace(name, name + ".unreadable")
                self._problems["file"] = (f"settings file {name} could not be read; kept as {name}.unreadable, "
                                          "started afresh")
            except OSError:
                self._problems["file"] = f"settings file {name} could not be read; nothing is remembered this time"
            self._qs = self._open(path)

    def _junk(self, name: str) -> bool:
        """An INI file that is not text (binary, not UTF-8), or text in which QSettings found nothing."""
        if not name.endswith((".ini", ".conf")) or not os.path.isfile(name):
            return False
        try:
            with open(name, "rb") as handle:
                data = handle.read(1 << 20)
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
        except OSError:
            return False
        return b"\0" in data or (bool(data.strip()) and not self._qs.allKeys())

    @staticmethod
    def _open(path: str | None) -> QSettings:
        if path:
            return QSettings(path, QSettings.Format.IniFormat)
        return QSettings("TorchBudget", "TorchBudget")

    def problems(self) -> list[str]:
        """What was ignored while reading (one line each), for the window to say."""
        return list(self._problems.values())

    def _value(self, key: str, default, kind):
        try:
            value = self._qs.value(key, default, kind) if kind is not None else self._qs.value(key, default)
        except Exception:  # noqa: BLE001 - a value of another type than asked: left out
            self._problems[key] = f"setting {key} was unreadable and was ignored"
            return default
        return default if value is None else value

    def last_workload(self) -> Workload | None:
        text = self._value("workload/last", "", str)
        if not isinstance(text, str) or not text:
            return None
        try:
            workload = Workload.from_json(text)
            check_workload(workload)
        except (UserError, ValueError, TypeError, RecursionError) as exc:
            # a stale or hand-edited entry: fall back to the default workload, and say so
            self._problems["workload/last"] = f"the last workload was ignored ({exc})"
            return None
        return workload

    def set_last_workload(self, workload: Workload) -> None:
        self._qs.setValue("workload/last", workload.to_json())

    def cluster(self) -> dict:
        """The last cluster choice (GPUs per node, interconnect names) as WorkloadState.set_cluster takes it;
        anything unreadable is left out (the state checks the names)."""
        import json

        text = self._value("workload/cluster", "", str)
        try:
            data = json.loads(text) if isinstance(text, str) and text else {}
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            self._problems["workload/cluster"] = "the last cluster (GPUs per node, interconnects) was ignored"
            return {}
        return {k: data[k] for k in ("gpus_per_node", "intra", "inter") if data.get(k) is not None}

    def set_cluster(self, choice) -> None:
        import json

        self._qs.setValue("workload/cluster", json.dumps({"gpus_per_node": choice.gpus_per_node,
                                                          "intra": choice.intra, "inter": choice.inter}))

    def _strings(self, key: str) -> list[str]:
        value = self._value(key, [], list)
        if not isinstance(value, list):
            return []
        return [v for v in value if isinstance(v, str) and v]

    def recent_models(self) -> list[str]:
        return self._strings("workload/recent_models")[:RECENT_LIMIT]

    def add_recent_model(self, model: str) -> None:
        recent = [m for m in self.recent_models() if m != model]
        self._qs.setValue("workload/recent_models", [model, *recent][:RECENT_LIMIT])

    def ticked_gpus(self) -> list[str]:
        return self._strings("hardware/ticked")

    def set_ticked_gpus(self, names: list[str]) -> None:
        self._qs.setValue("hardware/ticked", list(names))

    def primary_gpu(self) -> str:
        value = self._value("hardware/primary", "", str)
        return value if isinstance(value, str) else ""

    def set_primary_gpu(self, name: str) -> None:
        self._qs.setValue("hardware/primary", name)

    def geometry(self) -> QByteArray | None:
        value = self._value("window/geometry", None, None)
        return value if isinstance(value, (QByteArray, bytes)) else None

    def set_geometry(self, data) -> None:
        self._qs.setValue("window/geometry", data)

    def sync(self) -> None:
        self._qs.sync()
