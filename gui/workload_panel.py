"""The workload panel: model (searchable torchvision list, a user's .py file, recent models), inputs,
batch and resolution (slider + spin box), precision, mode, optimizer and checkpointing. It emits a
``Workload`` whenever something changes, or shows an error next to the field that is wrong."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QCompleter, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QInputDialog, QLineEdit,
    QPushButton, QSlider, QSpinBox, QVBoxLayout, QWidget,
)

from torchbudget.engine import vocab
from torchbudget.engine.errors import UserError
from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.workload import Workload
from torchbudget.gui.backend import model_names
from torchbudget.gui.field_error import FieldError

OPTIMIZERS = (*vocab.OPTIMIZER_NAMES, vocab.NO_OPTIMIZER)
MAX_BATCH = 4096
MIN_RESOLUTION, MAX_RESOLUTION, RESOLUTION_STEP = 16, 4096, 16


def python_file_entries(path: str) -> list[str]:
    """Top-level classes and functions defined in a .py file, read with ``ast`` so nothing in it runs here."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}", field="model") from None
    except SyntaxError as exc:
        raise UserError(f"{Path(path).name} has a syntax error on line {exc.lineno}: {exc.msg}", field="model") from None
    names = [n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and not n.name.startswith("_")]
    if not names:
        raise UserError(f"{Path(path).name} defines no class or function to build a model from", field="model")
    return names


def as_shown(workload: Workload) -> Workload:
    """The workload ``set_workload(workload)`` then ``workload()`` give back (inference carries no optimizer
    or checkpointing, as on the CLI; no inputs means the default image), so gui.app can trace it ahead."""
    o = workload.options
    training = o.mode == "train"
    options = TraceOptions(mode=o.mode, precision=o.precision, optimizer=o.optimizer if training else None,
                           checkpointing=training and o.checkpointing)
    return Workload(workload.model, workload.inputs or parse_inputs("1x3x224x224"), options)


class WorkloadPanel(QGroupBox):
    workloadChanged = Signal(object)    # Workload
    modelChanged = Signal(str)          # a known torchvision name: the window fetches its default input

    def __init__(self, recent_models: list[str] | None = None, parent=None, *, may_list_models: bool = True):
        """``may_list_models=False``: take the model list from the trace store only, never import torchvision
        here (the launch path); ``reload_model_names()`` fills it in later."""
        super().__init__("Workload", parent)
        self._may_list_models = may_list_models
        self.errors: dict[str, FieldError] = {}
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        # model: searchable list + open a .py file
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_combo.setToolTip("torchvision model name (type to search), or path/to/file.py:ClassOrFactory")
        self._model_items = QStandardItemModel(self)
        self.model_combo.setModel(self._model_items)
        completer = QCompleter(self._model_items, self)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.model_combo.setCompleter(completer)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(12)
        self.open_py_button = QPushButton("Open .py…")
        self.open_py_button.setToolTip("Use a model defined in your own Python file (it runs in a separate process)")
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.open_py_button)
        form.addRow("Model", self._with_error(row, "model"))

        self.inputs_edit = QLineEdit("1x3x224x224")
        self.inputs_edit.setToolTip("Input shape(s), batch first: 1x3x224x224, or several separated by commas, "
                                    "with an optional dtype (1x128:int64) and name (ids=1x128:int64)")
        form.addRow("Input shape", self._with_error(self.inputs_edit, "input"))

        self.batch_spin, self.batch_slider = QSpinBox(), QSlider(Qt.Orientation.Horizontal)
        self.batch_spin.setRange(1, MAX_BATCH)
        self.batch_slider.setRange(1, 512)
        for w in (self.batch_spin, self.batch_slider):
            w.setToolTip("Batch size: the first dimension of every input")
        form.addRow("Batch size", self._pair(self.batch_slider, self.batch_spin))

        self.resolution_spin, self.resolution_slider = QSpinBox(), QSlider(Qt.Orientation.Horizontal)
        self.resolution_spin.setRange(MIN_RESOLUTION, MAX_RESOLUTION)
        self.resolution_spin.setSingleStep(RESOLUTION_STEP)
        self.resolution_spin.setSuffix(" px")
        self.resolution_slider.setRange(MIN_RESOLUTION // RESOLUTION_STEP, 1024 // RESOLUTION_STEP)
        for w in (self.resolution_spin, self.resolution_slider):
            w.setToolTip("Height = width of image inputs (the last two dimensions)")
        form.addRow("Resolution", self._pair(self.resolution_slider, self.resolution_spin))

        self.precision_combo = QComboBox()
        for p in vocab.PRECISIONS:
            self.precision_combo.addItem(p.name)
            self.precision_combo.setItemData(self.precision_combo.count() - 1, p.tip, Qt.ItemDataRole.ToolTipRole)
        self.precision_combo.setToolTip("Numeric precision of weights, activations and matmuls")
        form.addRow("Precision", self.precision_combo)

        self.mode_combo = QComboBox()
        for m in vocab.MODES:
            self.mode_combo.addItem(m.label, m.name)
            self.mode_combo.setItemData(self.mode_combo.count() - 1, m.tip, Qt.ItemDataRole.ToolTipRole)
        self.mode_combo.setToolTip("Inference: forward only, no gradients. Training: forward, backward and optimizer step")
        form.addRow("Mode", self.mode_combo)

        self.optimizer_combo = QComboBox()
        self.optimizer_combo.addItems(OPTIMIZERS)
        self.optimizer_combo.setToolTip("Optimizer whose state (e.g. Adam's two moments) is counted in training")
        self.checkpoint_box = QCheckBox("Activation checkpointing")
        self.checkpoint_box.setToolTip("What-if: recompute activations in backward instead of keeping them")
        form.addRow("Optimizer", self.optimizer_combo)
        form.addRow("", self.checkpoint_box)

        self.set_recent_models(recent_models or [])
        self._connect()
        self._sync_training_widgets()

    # -- layout helpers ---------------------------------------------------------
    def _with_error(self, inner, field: str) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        if isinstance(inner, QWidget):
            layout.addWidget(inner)
        else:
            layout.addLayout(inner)
        self.errors[field] = FieldError()
        layout.addWidget(self.errors[field])
        return box

    @staticmethod
    def _pair(slider, spin) -> QWidget:
        box = QWidget()
        layout = QHBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(slider, 1)
        layout.addWidget(spin)
        return box

    def _connect(self):
        self.model_combo.currentTextChanged.connect(self._on_model_text)
        self.model_combo.lineEdit().editingFinished.connect(self._on_model_typed)
        self.open_py_button.clicked.connect(self.open_python_file)
        self.inputs_edit.textEdited.connect(self._on_inputs_edited)
        self.batch_slider.valueChanged.connect(lambda v: self.batch_spin.setValue(v))
        self.batch_spin.valueChanged.connect(self._on_batch)
        self.resolution_slider.valueChanged.connect(lambda v: self.resolution_spin.setValue(v * RESOLUTION_STEP))
        self.resolution_spin.valueChanged.connect(self._on_resolution)
        for combo in (self.precision_combo, self.mode_combo, self.optimizer_combo):
            combo.currentIndexChanged.connect(self._emit)
        self.mode_combo.currentIndexChanged.connect(self._sync_training_widgets)
        self.checkpoint_box.toggled.connect(self._emit)

    # -- model list -----------------------------------------------------------------
    def set_recent_models(self, recent: list[str]):
        self._recent = list(recent)
        current = self.model_combo.currentText() or "resnet50"
        with QSignalBlocker(self.model_combo):
            self._model_items.clear()
            names = model_names(may_import=self._may_list_models)
            self.model_list_pending = names is None
            names = names or []
            self._known_models = set(names)
            for name in recent:
                item = QStandardItem(name)
                item.setToolTip("recently used")
                self._model_items.appendRow(item)
            for name in names:
                if name not in recent:
                    self._model_items.appendRow(QStandardItem(name))
            self.model_combo.setCurrentText(current)

    def reload_model_names(self) -> None:
        """After the list was stored, or torchvision imported (listing is cheap then): the full list."""
        self._may_list_models = "torchvision" in sys.modules
        self.set_recent_models(self._recent)

    def open_python_file(self, path: str | None = None, entry: str | None = None):
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Open a model file", "", "Python files (*.py)")
            if not path:
                return
        try:
            entries = python_file_entries(path)
        except UserError as exc:
            self.show_error(exc)
            return
        if entry is None:
            if len(entries) == 1:
                entry = entries[0]
            else:
                entry, ok = QInputDialog.getItem(self, "Pick the model", f"Class or factory in {Path(path).name}:",
                                                 entries, 0, False)
                if not ok:
                    return
        self.model_combo.setCurrentText(f"{path}:{entry}")

    # -- field sync ----------------------------------------------------------------
    def _on_inputs_edited(self, _text=None):
        try:
            specs = parse_inputs(self.inputs_edit.text())
        except UserError as exc:
            self.show_error(exc)
            return
        with QSignalBlocker(self.batch_spin), QSignalBlocker(self.batch_slider):
            self.batch_spin.setValue(specs[0].shape[0])
            self.batch_slider.setValue(min(specs[0].shape[0], self.batch_slider.maximum()))
        spatial = [s for s in specs if len(s.shape) >= 3]
        self.resolution_spin.setEnabled(bool(spatial))
        self.resolution_slider.setEnabled(bool(spatial))
        if spatial:
            with QSignalBlocker(self.resolution_spin), QSignalBlocker(self.resolution_slider):
                self.resolution_spin.setValue(spatial[0].shape[-1])
                self.resolution_slider.setValue(spatial[0].shape[-1] // RESOLUTION_STEP)
        self._emit()

    def _rewrite_inputs(self, change):
        try:
            specs = parse_inputs(self.inputs_edit.text())
        except UserError as exc:
            self.show_error(exc)
            return
        self.inputs_edit.setText(", ".join(change(s).text() for s in specs))
        self._emit()

    def _on_batch(self, batch: int):
        with QSignalBlocker(self.batch_slider):
            self.batch_slider.setValue(min(batch, self.batch_slider.maximum()))
        self._rewrite_inputs(lambda s: s.with_batch(batch))

    def _on_resolution(self, pixels: int):
        with QSignalBlocker(self.resolution_slider):
            self.resolution_slider.setValue(pixels // RESOLUTION_STEP)
        self._rewrite_inputs(lambda s: s.with_resolution(pixels, pixels) if len(s.shape) >= 3 else s)

    def _sync_training_widgets(self, *_):
        training = self.mode_combo.currentData() == "train"
        self.optimizer_combo.setEnabled(training)
        self.checkpoint_box.setEnabled(training)

    # -- workload in/out -----------------------------------------------------------
    def workload(self) -> Workload:
        """The workload the fields describe; raises a UserError naming the bad field."""
        model = self.model_combo.currentText().strip()
        if not model:
            raise UserError("choose a model: type a torchvision name or open a .py file", field="model")
        inputs = parse_inputs(self.inputs_edit.text())
        training = self.mode_combo.currentData() == "train"
        optimizer = self.optimizer_combo.currentText() if training else "none"
        options = TraceOptions(   # inference carries no optimizer/checkpointing, as on the CLI
            mode=self.mode_combo.currentData(), precision=self.precision_combo.currentText(),
            optimizer=None if optimizer == "none" else optimizer,
            checkpointing=training and self.checkpoint_box.isChecked(),
        )
        return Workload(model, inputs, options)

    def set_workload(self, workload: Workload):
        widgets = (self.model_combo, self.inputs_edit, self.precision_combo, self.mode_combo, self.optimizer_combo,
                   self.checkpoint_box, self.batch_spin, self.batch_slider, self.resolution_spin, self.resolution_slider)
        blockers = [QSignalBlocker(w) for w in widgets]
        o = workload.options
        self.model_combo.setCurrentText(workload.model)
        self.inputs_edit.setText(", ".join(s.text() for s in workload.inputs) or "1x3x224x224")
        self.precision_combo.setCurrentText(o.precision)
        self.mode_combo.setCurrentIndex(max(0, self.mode_combo.findData(o.mode)))
        self.optimizer_combo.setCurrentText(o.optimizer or ("none" if o.mode == "train" else "adamw"))
        self.checkpoint_box.setChecked(o.checkpointing)
        del blockers
        self._sync_training_widgets()
        self._on_inputs_edited()

    def _on_model_text(self, text: str):
        if text.strip() in self._known_models:
            self.modelChanged.emit(text.strip())   # analysed once its own input shape is in the field
        elif ".py" in text:
            self._emit()
        # anything else is still being typed: checked when editing finishes (Enter or focus out)

    def _on_model_typed(self):
        if self.model_combo.currentText().strip() not in self._known_models:
            self._emit()   # an unknown name gets its error now, not on every keystroke

    def apply_default_inputs(self, model: str, specs) -> None:
        """Fill the input field with ``model``'s default input, keeping the batch size the user chose."""
        if self.model_combo.currentText().strip() != model or not specs:
            return   # the user moved on to another model meanwhile
        batch = self.batch_spin.value()
        self.inputs_edit.setText(", ".join(s.with_batch(batch).text() for s in specs))
        self._on_inputs_edited()

    def _emit(self, *_):
        try:
            workload = self.workload()
        except UserError as exc:
            self.show_error(exc)
            return
        self.clear_errors()
        self.workloadChanged.emit(workload)

    # -- errors ----------------------------------------------------------------------
    def show_error(self, error: UserError) -> bool:
        """Show ``error`` under its field; False when the field is not on this panel."""
        label = self.errors.get(getattr(error, "field", None) or "")
        if label is None:
            return False
        label.show_message(str(error))
        return True

    def clear_errors(self):
        for label in self.errors.values():
            label.clear_message()
