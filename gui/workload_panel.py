"""The workload panel: model (searchable torchvision list, a user's .py file, recent models), its keyword
arguments, inputs, batch and the second axis (slider + spin box: resolution for image inputs, sequence length
for token inputs), precision, mode, optimizer and its implementation, attention backend, checkpointing,
counting convention, MoE routing and the attention FLOP convention; a Generation group (prefill/decode: KV
cache context and dtype) and a Fine-tuning group (training: LoRA rank and targets, frozen-weight dtype,
freeze globs, gradient accumulation), each shown only in the modes it means something in; and the Cluster group
(gui.cluster_panel: strategy, GPU count, TP degree, sequence parallel, GPUs per node, interconnects).

It edits a ``gui.state.WorkloadState`` and renders from it (it keeps no workload of its own): a slider
changes the state's batch, and the input field is then redrawn from the state, never re-parsed. Text that
does not parse stays in its field as the state's draft, with its error underneath. Every choice comes from
engine.vocab (names, labels, tips)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QCompleter, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QInputDialog, QLabel,
    QLineEdit, QPushButton, QSlider, QVBoxLayout, QWidget,
)

from torchbudget.engine import vocab
from torchbudget.engine.errors import UserError
from torchbudget.engine.workload import Workload
from torchbudget.gui.backend import model_names
from torchbudget.gui.field_error import FieldError
from torchbudget.gui.spin_box import LimitedSpinBox
from torchbudget.gui.state import (
    MAX_DIM, OPTION_TEXT_FIELDS, Change, WorkloadState, applies, image_side, inputs_text, kwargs_text,
)

BATCH_SLIDER_MAX = 512
RESOLUTION_STEP, RESOLUTION_SLIDER_MAX = 16, 1024
SEQ_LEN_STEP, SEQ_LEN_SLIDER_MAX = 64, 32768    # token inputs: the slider in steps of 64 positions
NO_OPTIMIZER_TIP = "No optimizer step: forward and backward only (gradients are still kept)."
# option combos: TraceOptions field -> (row label, vocab terms, tip of the whole combo)
OPTION_COMBOS = (
    ("precision", "Precision", vocab.PRECISIONS, "Numeric precision of weights, activations and matmuls"),
    ("mode", "Mode", vocab.MODES, "Inference: forward only. Training: forward, backward and optimizer step"),
    ("optimizer", "Optimizer", vocab.OPTIMIZERS, "Optimizer whose state (e.g. Adam's two moments) is counted in "
                                                 "training"),
    ("optimizer_impl", "Optimizer kernels", vocab.OPTIMIZER_IMPLS, "How torch.optim runs the step: its "
                                                                   "temporaries differ (training only)"),
    ("attention", "Attention", vocab.ATTENTION_BACKENDS, "Which scaled-dot-product attention kernel the trace "
                                                         "models"),
    ("convention", "Counting", vocab.CONVENTIONS, "Which FLOP/MAC counting convention the layer table uses"),
    ("attention_flops", "Attention FLOPs", vocab.ATTENTION_FLOPS, "How causal attention's FLOPs are counted: the "
                                                                  "full square the kernels compute, or the half "
                                                                  "triangle (the 6ND-style rule)"),
    ("moe_routing", "MoE routing", vocab.MOE_ROUTINGS, "Mixture-of-experts models: how tokens spread over the "
                                                       "experts (top-k routers send each token to exactly k)"),
)
GENERATION_COMBOS = (
    ("kv_dtype", "KV-cache dtype", vocab.KV_DTYPES, "What the KV cache is stored in (what-if: fp8, int8)"),
)
FINETUNE_COMBOS = (
    ("base_dtype", "Frozen weights", vocab.BASE_DTYPES, "Storage of the frozen (non-trainable) weights: bf16/fp16, "
                                                        "or quantised int8 / nf4 as QLoRA does"),
)


# the boxes whose typed number is kept when the workload refuses it, and the field whose line says why
TYPED_BOXES = {"batch_spin": "batch", "resolution_spin": "resolution", "seq_len_spin": "seq_len"}


def python_file_entries(path: str) -> list[str]:
    """Top-level classes and functions defined in a .py file, read with ``ast`` so nothing in it runs here."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}", field="model") from None
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" on line {line}" if line else ""
        raise UserError(f"{Path(path).name} has a syntax error{where}: {getattr(exc, 'msg', exc)}",
                        field="model") from None
    names = [n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and not n.name.startswith("_")]
    if not names:
        raise UserError(f"{Path(path).name} defines no class or function to build a model from", field="model")
    return names


class WorkloadPanel(QGroupBox):
    workloadChanged = Signal(object)    # Workload: the state changed and describes a workload exactly

    def __init__(self, recent_models: list[str] | None = None, parent=None, *, may_list_models: bool = True,
                 state: WorkloadState | None = None):
        """``may_list_models=False``: take the model list from the trace store only, never import torchvision
        here (the launch path); ``reload_model_names()`` fills it in later."""
        super().__init__("Workload", parent)
        self.state = state if state is not None else WorkloadState()
        self._may_list_models = may_list_models
        self.errors: dict[str, FieldError] = {}
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.errors["file"] = FieldError()   # a workload file that could not be opened
        self.errors["file"].setToolTip("Why the last workload file was not opened")
        form.addRow(self.errors["file"])

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

        self.kwargs_edit = QLineEdit()
        self.kwargs_edit.setPlaceholderText('none, e.g. {"num_classes": 10}')
        self.kwargs_edit.setToolTip("Keyword arguments for the model's constructor or factory, as a JSON object")
        form.addRow("Model kwargs", self._with_error(self.kwargs_edit, "model_kwargs"))

        self.inputs_edit = QLineEdit()
        self.inputs_edit.setPlaceholderText("the model's default input")
        self.inputs_edit.setToolTip("Input shape(s), batch first: 1x3x224x224, or several separated by commas, "
                                    "with an optional dtype (1x128:int64) and name (ids=1x128:int64)")
        form.addRow("Input shape", self._with_error(self.inputs_edit, "input"))

        self.batch_spin, self.batch_slider = LimitedSpinBox(), QSlider(Qt.Orientation.Horizontal)
        self.batch_spin.setRange(1, MAX_DIM)
        self.batch_slider.setRange(1, BATCH_SLIDER_MAX)
        for w in (self.batch_spin, self.batch_slider):
            w.setToolTip(f"Batch size: the first dimension of every input (the box takes up to {MAX_DIM:,})")
        form.addRow("Batch size", self._with_error(self._pair(self.batch_slider, self.batch_spin), "batch"))

        self.resolution_spin, self.resolution_slider = LimitedSpinBox(), QSlider(Qt.Orientation.Horizontal)
        self.resolution_spin.setRange(1, MAX_DIM)
        self.resolution_spin.setSingleStep(RESOLUTION_STEP)
        self.resolution_spin.setSuffix(" px")
        self.resolution_slider.setRange(1, RESOLUTION_SLIDER_MAX // RESOLUTION_STEP)
        for w in (self.resolution_spin, self.resolution_slider):
            w.setToolTip("Height = width of image inputs (their last two dimensions)")
        # the second axis: resolution for image inputs, sequence length for token inputs (one shown at a time)
        self.seq_len_spin, self.seq_len_slider = LimitedSpinBox(), QSlider(Qt.Orientation.Horizontal)
        self.seq_len_spin.setRange(1, MAX_DIM)
        self.seq_len_spin.setSingleStep(SEQ_LEN_STEP)
        self.seq_len_spin.setSuffix(" tokens")
        self.seq_len_slider.setRange(1, SEQ_LEN_SLIDER_MAX // SEQ_LEN_STEP)
        for w in (self.seq_len_spin, self.seq_len_slider):
            w.setToolTip("Sequence length: positions of every token input (ids, attention mask); the slider moves "
                         f"in steps of {SEQ_LEN_STEP}")
        self.resolution_pair = self._pair(self.resolution_slider, self.resolution_spin)
        self.seq_len_pair = self._pair(self.seq_len_slider, self.seq_len_spin)
        axis = QWidget()
        axis_layout = QVBoxLayout(axis)
        axis_layout.setContentsMargins(0, 0, 0, 0)
        axis_layout.addWidget(self.resolution_pair)
        axis_layout.addWidget(self.seq_len_pair)
        self.seq_len_pair.setVisible(False)
        self.axis_label = QLabel("Resolution")
        form.addRow(self.axis_label, self._with_error(axis, "resolution"))
        self.errors["seq_len"] = self.errors["resolution"]

        self.option_combos: dict[str, QComboBox] = {}
        for name, label, terms, tip in OPTION_COMBOS:
            combo = self._combo(name, terms, tip)
            form.addRow(label, self._with_error(combo, name))   # e.g. "not supported yet" under Mode
            if name == "optimizer_impl":
                self.checkpoint_box = QCheckBox("Activation checkpointing")
                self.checkpoint_box.setToolTip("What-if: recompute activations in backward instead of keeping them "
                                               "(training only)")
                form.addRow("", self.checkpoint_box)
        self.precision_combo = self.option_combos["precision"]
        self.mode_combo = self.option_combos["mode"]
        self.optimizer_combo = self.option_combos["optimizer"]
        self.optimizer_impl_combo = self.option_combos["optimizer_impl"]
        self.attention_combo = self.option_combos["attention"]
        self.convention_combo = self.option_combos["convention"]

        # generation (prefill / decode): the KV cache
        self.generation_group = QGroupBox("Generation")
        self.generation_group.setToolTip("Serving an LLM: prefill fills the KV cache with the prompt; decode adds one "
                                         "token per sequence (batch = concurrent sequences) against a cache of "
                                         "the context's tokens")
        gen_form = QFormLayout(self.generation_group)
        gen_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.context_spin = LimitedSpinBox()
        self.context_spin.setRange(1, MAX_DIM)
        self.context_spin.setSingleStep(256)
        self.context_spin.setSuffix(" tokens")
        self.context_spin.setToolTip("Decode: tokens already in the KV cache of each sequence before the step")
        self.context_label = QLabel("Context")
        gen_form.addRow(self.context_label, self._with_error(self.context_spin, "context_len"))
        for name, label, terms, tip in GENERATION_COMBOS:
            gen_form.addRow(label, self._with_error(self._combo(name, terms, tip), name))
        after = form.getWidgetPosition(self.checkpoint_box)[0]   # under the mode's own rows
        form.insertRow(after + 1, self.generation_group)

        # fine-tuning (training): adapters, frozen weights, accumulation
        self.finetune_group = QGroupBox("Fine-tuning")
        self.finetune_group.setToolTip("LoRA / QLoRA adapters (peft), frozen weights and their storage, gradient "
                                       "accumulation")
        ft_form = QFormLayout(self.finetune_group)
        ft_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.lora_rank_spin = LimitedSpinBox()
        self.lora_rank_spin.setRange(0, 65536)
        self.lora_rank_spin.setSpecialValueText("none")
        self.lora_rank_spin.setToolTip("Rank of the LoRA adapters (none: train the model's own weights). Adapters "
                                       "train in fp32; the base is frozen")
        ft_form.addRow("LoRA rank", self._with_error(self.lora_rank_spin, "lora_rank"))
        self.lora_targets_edit = QLineEdit()
        self.lora_targets_edit.setPlaceholderText("family default, e.g. q_proj,v_proj")
        self.lora_targets_edit.setToolTip("Module names or patterns the adapters go on, comma-separated (applied "
                                          "on Enter or when the field loses focus)")
        ft_form.addRow("LoRA targets", self._with_error(self.lora_targets_edit, "lora_targets"))
        for name, label, terms, tip in FINETUNE_COMBOS:
            ft_form.addRow(label, self._with_error(self._combo(name, terms, tip), name))
        self.freeze_edit = QLineEdit()
        self.freeze_edit.setPlaceholderText("nothing, e.g. model.embed_tokens.*")
        self.freeze_edit.setToolTip("Parameter-name globs made non-trainable, comma-separated (applied on Enter or "
                                    "when the field loses focus)")
        ft_form.addRow("Freeze", self._with_error(self.freeze_edit, "freeze"))
        self.grad_accum_spin = LimitedSpinBox()
        self.grad_accum_spin.setRange(1, 1 << 20)
        self.grad_accum_spin.setToolTip("Micro-batches per optimizer step: memory is one micro-batch's, the global "
                                        "batch is steps × batch")
        ft_form.addRow("Grad accumulation", self._with_error(self.grad_accum_spin, "grad_accum"))
        self.text_edits = {"lora_targets": self.lora_targets_edit, "freeze": self.freeze_edit}
        form.insertRow(after + 2, self.finetune_group)

        # several GPUs: the strategy and the cluster (gui.cluster_panel)
        from torchbudget.gui.cluster_panel import ClusterGroup

        self.cluster_group = ClusterGroup(self)
        self.strategy_combo = self.option_combos["strategy"]
        form.addRow(self.cluster_group)

        self.set_recent_models(recent_models or [])
        self._connect()
        self.state.subscribe(self._on_state_changed)
        self.render()

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

    def _combo(self, name: str, terms, tip: str) -> QComboBox:
        """A combo of vocab terms (label shown, canonical name as data, tip per item), registered by field."""
        combo = QComboBox()
        for term in terms:
            combo.addItem(term.label, term.name)
            combo.setItemData(combo.count() - 1, term.tip, Qt.ItemDataRole.ToolTipRole)
        if name == "optimizer":
            combo.addItem(vocab.NO_OPTIMIZER, vocab.NO_OPTIMIZER)
            combo.setItemData(combo.count() - 1, NO_OPTIMIZER_TIP, Qt.ItemDataRole.ToolTipRole)
        combo.setToolTip(tip)
        self.option_combos[name] = combo
        return combo

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
        self.open_py_button.clicked.connect(lambda: self.open_python_file())
        self.inputs_edit.textEdited.connect(self._on_inputs_edited)
        self.kwargs_edit.textEdited.connect(lambda text: self.state.edit_text("model_kwargs", text,
                                                                             source="model_kwargs"))
        self.batch_slider.valueChanged.connect(lambda v: self._change("batch_slider", batch=v))
        self.batch_spin.valueChanged.connect(lambda v: self._change("batch_spin", batch=v))
        self.resolution_slider.valueChanged.connect(
            lambda v: self._change("resolution_slider", resolution=v * RESOLUTION_STEP))
        self.resolution_spin.valueChanged.connect(lambda v: self._change("resolution_spin", resolution=v))
        self.seq_len_slider.valueChanged.connect(lambda v: self._change("seq_len_slider", seq_len=v * SEQ_LEN_STEP))
        self.seq_len_spin.valueChanged.connect(lambda v: self._change("seq_len_spin", seq_len=v))
        for name in ("batch_spin", "resolution_spin", "seq_len_spin"):
            getattr(self, name).editingFinished.connect(lambda n=name: self._typing_ended(n))
        self.batch_spin.tooLarge.connect(lambda text: self._too_large("batch", "batch size", text))
        self.resolution_spin.tooLarge.connect(lambda text: self._too_large("resolution", "resolution", text))
        self.seq_len_spin.tooLarge.connect(lambda text: self._too_large("seq_len", "sequence length", text))
        self.context_spin.tooLarge.connect(lambda text: self._too_large("context_len", "context", text))
        self.context_spin.valueChanged.connect(lambda v: self._change("context_len", context_len=v))
        # no adapters, no targets for them: rank "none" drops the targets too
        self.lora_rank_spin.valueChanged.connect(
            lambda v: self._change("lora_rank", lora_rank=v, **({} if v else {"lora_targets": ()}))
            and "lora_targets" in self.state.drafts and self._on_option_text("lora_targets", self.lora_targets_edit))
        self.grad_accum_spin.valueChanged.connect(lambda v: self._change("grad_accum", grad_accum=v))
        for name, edit in self.text_edits.items():
            edit.editingFinished.connect(lambda n=name, e=edit: self._on_option_text(n, e))
        for name, combo in self.option_combos.items():
            combo.currentIndexChanged.connect(lambda _i, n=name, c=combo: self._on_option(n, c))
        self.checkpoint_box.toggled.connect(lambda on: self._change("checkpointing", checkpointing=on))
        self.cluster_group.connect(self)

    # -- model list -----------------------------------------------------------------
    def set_recent_models(self, recent: list[str]):
        self._recent = list(recent)
        current = self.model_combo.currentText() or self.state.workload.model
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
        self._change("open_py", model=f"{path}:{entry}")   # chosen by the user: trusted, runs next door

    # -- edits: widgets -> state ----------------------------------------------------------
    def _change(self, source: str, **changes) -> bool:
        try:
            self.state.update(source=source, **changes)
        except UserError as exc:
            field = TYPED_BOXES.get(source)
            if field is None:
                self.render()   # the widget shows what the workload still is; the error says why
                self.show_error(exc)
            else:
                # a box being typed in keeps its digits: an intermediate number refused (1x3x400000000x400000000
                # holds more than 2**63 bytes at batch 32) must not reset the box, or the next digits land on the
                # old value and the user never sees why; the message goes under that box, and the box shows the
                # workload's value again when typing ends
                self.render(None, source)
                self.errors[field].show_message(str(exc))
            return False
        return True

    def _typing_ended(self, source: str):
        box = {"batch_spin": self.batch_spin, "resolution_spin": self.resolution_spin,
               "seq_len_spin": self.seq_len_spin}[source]
        w = self.state.workload
        value = {"batch_spin": w.batch_size if w.inputs else None, "resolution_spin": image_side(w),
                 "seq_len_spin": w.seq_len}[source]
        if value is not None and box.value() != min(value, MAX_DIM):
            with QSignalBlocker(box):
                box.setValue(min(value, MAX_DIM))

    def _cluster_change(self, source: str, **changes) -> bool:
        try:
            self.state.set_cluster(source=source, **changes)
        except UserError as exc:
            self.render({"cluster"})
            self.show_error(exc)
            return False
        return True

    def _too_large(self, field: str, what: str, text: str):
        self.errors[field].show_message(f"{what} {text} is too large: at most {MAX_DIM:,}")

    def _on_inputs_edited(self, _text=None):
        self.state.edit_text("inputs", self.inputs_edit.text(), source="inputs")

    def _on_option_text(self, name: str, edit: QLineEdit):
        """LoRA targets / freeze globs: applied when typing ends (a half-typed glob is not traced)."""
        if name in self.state.drafts or edit.text() != ",".join(self.state.choice(name)):
            self.state.edit_text(name, edit.text(), source=name)

    def _on_option(self, name: str, combo: QComboBox):
        value = combo.currentData()
        if name == "optimizer" and value == vocab.NO_OPTIMIZER:
            value = None
        self._change(name, **{name: value})

    def _on_model_text(self, text: str):
        text = text.strip()
        if text == self.state.workload.model:
            return
        if text in self._known_models:
            self.state.pick_model(text)   # analysed once its own input shape is in the field
        elif ".py" in text:
            self._change("model", model=text)
        # anything else is still being typed: checked when editing finishes (Enter or focus out)

    def _on_model_typed(self):
        text = self.model_combo.currentText().strip()
        if text and text != self.state.workload.model and text not in self._known_models:
            self._change("model", model=text)   # an unknown name gets its error now, not on every keystroke

    # -- state -> widgets ----------------------------------------------------------------
    def _on_state_changed(self, change: Change):
        self.render(change.fields, change.source)
        self.clear_errors()
        for error in self.state.errors.values():
            self.show_error(error)
        if self.state.ready:
            self.workloadChanged.emit(change.workload)

    def render(self, fields=None, source: str | None = None):
        """Redraw the widgets of ``fields`` (all when None) from the state, except the widget ``source``
        the user is typing in. Signals are blocked: drawing is not an edit."""
        w, state = self.state.workload, self.state
        everything = fields is None
        fields = set(fields or ())
        show = lambda *names: everything or bool(fields & set(names))  # noqa: E731
        blockers = [QSignalBlocker(x) for x in (self.model_combo, self.inputs_edit, self.kwargs_edit, self.batch_spin,
                                                self.batch_slider, self.resolution_spin, self.resolution_slider,
                                                self.seq_len_spin, self.seq_len_slider, self.context_spin,
                                                self.lora_rank_spin, self.grad_accum_spin, *self.text_edits.values(),
                                                self.checkpoint_box, *self.option_combos.values(),
                                                *self.cluster_group.widgets())]
        if show("model") and source not in ("model",):
            self.model_combo.setCurrentText(w.model)
        if show("inputs", "drafts") and source != "inputs":
            self.inputs_edit.setText(state.drafts.get("inputs", inputs_text(w.inputs)))
        if show("model_kwargs", "drafts") and source != "model_kwargs":
            self.kwargs_edit.setText(state.drafts.get("model_kwargs", kwargs_text(w.model_kwargs)))
        if show("inputs", "drafts"):
            batch = w.batch_size
            if source != "batch_spin":
                self.batch_spin.setValue(min(batch, MAX_DIM))
            if source != "batch_slider":
                self.batch_slider.setValue(min(batch, BATCH_SLIDER_MAX))
            side = image_side(w)
            if side is not None:
                if source != "resolution_spin":
                    self.resolution_spin.setValue(min(side, MAX_DIM))
                if source != "resolution_slider":
                    self.resolution_slider.setValue(min(side, RESOLUTION_SLIDER_MAX) // RESOLUTION_STEP)
            length = w.seq_len
            if length is not None:
                self.seq_len_spin.setSuffix(" token" if length == 1 else " tokens")
                if source != "seq_len_spin":
                    self.seq_len_spin.setValue(min(length, MAX_DIM))
                if source != "seq_len_slider":
                    self.seq_len_slider.setValue(min(length, SEQ_LEN_SLIDER_MAX) // SEQ_LEN_STEP)
            # batch, resolution and sequence length are part of the input shape: not editable while it does
            # not parse
            fixed = "inputs" not in state.drafts
            for widget in (self.batch_spin, self.batch_slider):
                widget.setEnabled(fixed and bool(w.inputs))
            for widget in (self.resolution_spin, self.resolution_slider):
                widget.setEnabled(fixed and side is not None)
            for widget in (self.seq_len_spin, self.seq_len_slider):
                widget.setEnabled(fixed and length is not None)
            # the second axis follows the inputs: sequence length for a token model, else resolution
            tokens = side is None and length is not None
            self.resolution_pair.setVisible(not tokens)
            self.seq_len_pair.setVisible(tokens)
            self.axis_label.setText("Sequence length" if tokens else "Resolution")
        mode = w.options.mode
        for name, combo in self.option_combos.items():
            if show(name, "mode") and source != name:
                value = state.choice(name)
                if name == "optimizer" and value is None:
                    value = vocab.NO_OPTIMIZER
                combo.setCurrentIndex(max(0, combo.findData(value)))
        if show("checkpointing", "mode") and source != "checkpointing":
            self.checkpoint_box.setChecked(bool(state.choice("checkpointing")))
        for name, spin in (("context_len", self.context_spin), ("lora_rank", self.lora_rank_spin),
                           ("grad_accum", self.grad_accum_spin)):
            if show(name, "mode") and source != name:
                spin.setValue(state.choice(name))
        for name, edit in self.text_edits.items():
            if show(name, "mode", "drafts") and source != name:
                edit.setText(state.drafts.get(name, ",".join(state.choice(name))))
        for widget in (self.optimizer_combo, self.optimizer_impl_combo, self.checkpoint_box):
            widget.setEnabled(applies("optimizer", mode))
        # Generation: only for prefill / decode (the context: decode only). Fine-tuning: training, or whatever
        # mode when adapters or a frozen-weight dtype are chosen (they change the workload there too)
        self.generation_group.setVisible(vocab.is_generation(mode))
        self.context_spin.setEnabled(applies("context_len", mode))
        self.context_label.setEnabled(applies("context_len", mode))
        self.finetune_group.setVisible(vocab.is_training(mode) or bool(w.options.lora_rank)
                                       or w.options.base_dtype != "auto")
        for widget in (self.freeze_edit, self.grad_accum_spin):
            widget.setEnabled(applies("grad_accum", mode))
        self.lora_targets_edit.setEnabled(bool(w.options.lora_rank) or "lora_targets" in state.drafts)
        self.cluster_group.render(state, show, source)
        del blockers

    # -- workload in/out -----------------------------------------------------------
    def workload(self) -> Workload:
        """The workload the fields describe; raises the UserError of a field that does not parse."""
        for error in self.state.errors.values():
            raise error
        return self.state.workload

    def set_workload(self, workload: Workload, *, source: str = "set") -> None:
        """Show ``workload`` (every field of it); raises UserError, changing nothing, when the app cannot
        take it (e.g. a dimension of 10**40)."""
        self.state.set(workload, source=source)

    # -- errors ----------------------------------------------------------------------
    def show_error(self, error: UserError) -> bool:
        """Show ``error`` under its field; False when the field is not on this panel."""
        label = self.errors.get(getattr(error, "field", None) or "")
        if label is None:
            return False
        label.show_message(str(error))
        return True

    def clear_errors(self, *, keep_file: bool = False):
        for field, label in self.errors.items():
            if not (keep_file and field == "file"):
                label.clear_message()
