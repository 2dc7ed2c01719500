"""The hardware panel: GPUs detected on this machine with live free/total memory (polled through NVML),
the spec database with search, checkable items to compare several GPUs, and the custom-GPU editor.
The *primary* GPU (the selected row) gets the verdict; every ticked GPU appears in plots and comparison."""
from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListView, QMessageBox, QPushButton, QVBoxLayout,
)

from torchbudget.engine.report.units import human_bytes
from torchbudget.engine.errors import UserError
from torchbudget.gui import backend
from torchbudget.gui.field_error import FieldError

SPEC_ROLE = Qt.ItemDataRole.UserRole + 1
POLL_MS = 2000


def _gpu_label(spec) -> str:
    where = " (this machine)" if spec.local_index is not None else " (custom)" if spec.origin == "user" else ""
    return f"{spec.name}{where} — {human_bytes(spec.memory_bytes, 0)}"


class HardwarePanel(QGroupBox):
    primaryChanged = Signal(object)   # GpuSpec
    tickedChanged = Signal(list)      # list[GpuSpec], primary first

    def __init__(self, parent=None, load: bool = True):
        super().__init__("Hardware", parent)
        layout = QVBoxLayout(self)
        self.live_label = QLabel()
        self.live_label.setWordWrap(True)
        self.live_label.setToolTip("GPUs found through NVML, with memory free right now (refreshed every 2 s)")
        layout.addWidget(self.live_label)

        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search GPUs (name, architecture, memory type)…")
        self.search_edit.setClearButtonEnabled(True)
        layout.addWidget(self.search_edit)
        self.items = QStandardItemModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.items)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterRole(Qt.ItemDataRole.ToolTipRole)
        self.list_view = QListView()
        self.list_view.setModel(self.proxy)
        self.list_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list_view.setToolTip("Click a GPU to get its verdict; tick several to compare them")
        layout.addWidget(self.list_view, 1)
        self.error = FieldError()
        layout.addWidget(self.error)
        self.file_problem = FieldError()   # the user's GPU file did not load: left out until it is fixed
        layout.addWidget(self.file_problem)

        buttons = QHBoxLayout()
        self.custom_button = QPushButton("Custom GPU…")
        self.custom_button.setToolTip("Describe a GPU that is not in the database; saved to your hardware file")
        self.remove_button = QPushButton("Remove custom")
        buttons.addWidget(self.custom_button)
        buttons.addWidget(self.remove_button)
        layout.addLayout(buttons)

        self.search_edit.textChanged.connect(self.proxy.setFilterFixedString)
        self.list_view.selectionModel().currentChanged.connect(self._on_current)
        self.items.itemChanged.connect(self._on_item_changed)
        self.custom_button.clicked.connect(self.edit_custom_gpu)
        self.remove_button.clicked.connect(self.remove_custom_gpu)

        self._live = []
        self._loading = False
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self.refresh_live_memory)
        if load:   # the main window loads it once itself, with the GPUs of the last session
            self.reload()

    # -- contents -----------------------------------------------------------------
    def reload(self, ticked: list[str] | None = None, primary: str | None = None):
        ticked = set(ticked if ticked is not None else [s.name for s in self.ticked()])
        primary = primary or (self.primary().name if self.primary() else "")
        self._live = backend.local_gpus()
        self._loading = True
        self.items.clear()
        for spec in [*self._live, *backend.database_gpus()]:
            item = QStandardItem(_gpu_label(spec))
            item.setData(spec, SPEC_ROLE)
            item.setEditable(False)
            item.setCheckable(True)
            item.setCheckState(Qt.CheckState.Checked if spec.name in ticked else Qt.CheckState.Unchecked)
            item.setToolTip(" ".join(filter(None, (spec.name, spec.vendor, spec.architecture, spec.memory_type,
                                                   f"{spec.bandwidth_gbs:g} GB/s", *spec.aliases))))
            self.items.appendRow(item)
        self._loading = False
        problem = backend.catalog_problem()
        if problem:
            self.file_problem.show_message(problem)
        else:
            self.file_problem.clear_message()
        self.refresh_live_memory()
        if self._live:
            self._poll.start()
        fallback = backend.default_gpu_name()
        if not self.select(primary or fallback):
            self.select(fallback)
            self.error.show_message(f"GPU {primary!r} is not in the database any more; showing {fallback}")

    def refresh_live_memory(self):
        lines = []
        for spec in self._live:
            free, total = backend.live_memory(spec)
            lines.append(f"{spec.name}: {human_bytes(free)} free of {human_bytes(total)}")
        self.live_label.setText("\n".join(lines) if lines else "No GPU detected on this machine — "
                                "pick one from the database to plan for it.")

    def _row_of(self, name: str) -> int:
        for row in range(self.items.rowCount()):
            if self.items.item(row).data(SPEC_ROLE).name == name:
                return row
        return -1

    def select(self, name: str) -> bool:
        row = self._row_of(name)
        if row < 0:
            self.error.show_message(f"unknown GPU {name!r}; pick one from the list")
            return False
        self.error.clear_message()
        index = self.proxy.mapFromSource(self.items.index(row, 0))
        if not index.isValid():
            self.search_edit.clear()
            index = self.proxy.mapFromSource(self.items.index(row, 0))
        self.list_view.setCurrentIndex(index)
        self.list_view.scrollTo(index)
        return True

    def set_ticked(self, names: list[str]):
        self._loading = True
        for row in range(self.items.rowCount()):
            item = self.items.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.data(SPEC_ROLE).name in names else Qt.CheckState.Unchecked)
        self._loading = False
        self.tickedChanged.emit(self.ticked())

    def primary(self):
        index = self.list_view.currentIndex()
        return self.proxy.data(index, SPEC_ROLE) if index.isValid() else None

    def ticked(self) -> list:
        """Ticked GPUs with the primary first (the primary always takes part)."""
        primary = self.primary()
        specs = [primary] if primary else []
        for row in range(self.items.rowCount()):
            item = self.items.item(row)
            spec = item.data(SPEC_ROLE)
            if item.checkState() == Qt.CheckState.Checked and (primary is None or spec.name != primary.name):
                specs.append(spec)
        return specs

    # -- reactions -----------------------------------------------------------------
    def _on_current(self, current, _previous):
        spec = self.proxy.data(current, SPEC_ROLE) if current.isValid() else None
        if spec is not None:
            self.error.clear_message()
            self.primaryChanged.emit(spec)
            self.tickedChanged.emit(self.ticked())

    def _on_item_changed(self, item: QStandardItem):
        if self._loading:
            return
        if item.checkState() == Qt.CheckState.Checked:
            # ticking a GPU also makes it the one the verdict is about
            self.select(item.data(SPEC_ROLE).name)
        else:
            self.tickedChanged.emit(self.ticked())

    def edit_custom_gpu(self):
        """The dialog saves when its Save button is pressed and stays open with the error when the file
        cannot be written (a full disk, a clash with a built-in name), so nothing typed is lost."""
        from torchbudget.gui.gpu_editor import GpuEditorDialog

        dialog = GpuEditorDialog(self, base=self.primary(), save=backend.save_user_gpu)
        if dialog.exec():
            self.reload(primary=dialog.saved.name)

    def remove_custom_gpu(self):
        spec = self.primary()
        if spec is None or spec.origin != "user":
            self.error.show_message("select a custom GPU to remove it")
            return
        if QMessageBox.question(self, "Remove custom GPU", f"Remove {spec.name} from your hardware file?") \
                == QMessageBox.StandardButton.Yes:
            try:
                backend.remove_user_gpu(spec.name)
            except UserError as exc:
                self.error.show_message(str(exc))
                return
            self.reload(primary=backend.default_gpu_name())
