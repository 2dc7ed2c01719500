"""The cluster panel (issue 11): several GPUs. The strategy (engine.vocab.STRATEGIES), the GPU count (world size),
the tensor-parallel degree and sequence parallel are workload options (TraceOptions: rank 0's step is traced under
the strategy's wrappers); GPUs per node and the links inside and between nodes are the cluster (the state's
``cluster``: hardware.cluster fills what is left on auto), which only the communication time depends on.

The group is part of the workload panel (its errors sit under its fields, its widgets render from the same
state): the panel builds it, connects it and calls ``render``."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QLabel

from torchbudget.engine import vocab
from torchbudget.gui.spin_box import LimitedSpinBox

AUTO = ""   # a combo's data for "hardware.cluster's default"


def interconnect_names(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, tip) of every interconnect of ``kinds`` in hardware.interconnect's table (the user file's included)."""
    from torchbudget.hardware.interconnect import interconnects

    out = []
    for link in interconnects(strict=False):   # a damaged user file: said once by the hardware panel
        if link.kind in kinds:
            domain = f", up to {link.domain_gpus} GPUs" if link.domain_gpus else ""
            out.append((link.name, f"{link.bandwidth_gb_s:g} GB/s per GPU at {link.efficiency:.0%} bus efficiency, "
                                   f"{link.latency_us:g} µs per call{domain}"))
    return out


class ClusterGroup(QGroupBox):
    """The widgets; the workload panel owns the edits (``panel._change``) and the errors (``panel.errors``)."""

    def __init__(self, panel):
        super().__init__("Cluster (several GPUs)")
        self.setToolTip("Plan one rank of a job over several GPUs: memory, the verdict and the largest batch become "
                        "per rank (per GPU); the step adds communication (docs/distributed.md)")
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.strategy_combo = panel._combo("strategy", vocab.STRATEGIES, "How the model is spread over the GPUs: "
                                           "PyTorch's own DDP, FSDP2, ZeRO-1 or tensor parallel")
        form.addRow("Strategy", panel._with_error(self.strategy_combo, "strategy"))
        self.world_spin = LimitedSpinBox()
        self.world_spin.setRange(1, vocab.MAX_WORLD_SIZE)
        self.world_spin.setSuffix(" GPUs")
        self.world_spin.setToolTip("GPUs in the job (the world size): every one runs rank 0's step")
        form.addRow("GPU count", panel._with_error(self.world_spin, "world_size"))
        self.tp_spin = LimitedSpinBox()
        self.tp_spin.setRange(1, vocab.MAX_WORLD_SIZE)
        self.tp_spin.setToolTip("Tensor-parallel degree: GPUs that share each layer (tp: all of them; fsdp+tp: "
                                "groups of this many, FSDP across the groups). Must divide the GPU count")
        self.tp_label = QLabel("TP degree")
        form.addRow(self.tp_label, panel._with_error(self.tp_spin, "tp_size"))
        self.sp_box = QCheckBox("Sequence parallel")
        self.sp_box.setToolTip("tp / fsdp+tp: norms and residuals sharded along the sequence (SequenceParallel)")
        form.addRow("", panel._with_error(self.sp_box, "sequence_parallel"))
        self.per_node_spin = LimitedSpinBox()
        self.per_node_spin.setRange(0, vocab.MAX_WORLD_SIZE)
        self.per_node_spin.setSpecialValueText("auto")
        self.per_node_spin.setToolTip("GPUs in one node (auto: the GPU count, at most 8 or the NVLink domain); a "
                                      "group spanning nodes crosses the inter-node link")
        form.addRow("GPUs per node", panel._with_error(self.per_node_spin, "gpus_per_node"))
        self.intra_combo = QComboBox()
        self.intra_combo.setToolTip("The link between GPUs of one node (auto: the GPU's own, e.g. NVLink 4 on "
                                    "H100 SXM)")
        form.addRow("Inside a node", panel._with_error(self.intra_combo, "interconnect"))
        self.inter_combo = QComboBox()
        self.inter_combo.setToolTip("The network between nodes (auto: InfiniBand NDR, 400 Gb/s per GPU)")
        form.addRow("Between nodes", self.inter_combo)
        panel.errors["cluster"] = panel.errors["world_size"]   # hardware.cluster's refusals name the world size
        self.form = form
        self.fill_links()

    def fill_links(self, intra_default: str | None = None) -> None:
        """The interconnect combos from hardware.interconnect; "auto" says what it stands for on this GPU."""
        from torchbudget.hardware.interconnect import INTRA_NODE_KINDS, DEFAULT_INTER_NODE

        for combo, kinds, default in ((self.intra_combo, INTRA_NODE_KINDS, intra_default),
                                      (self.inter_combo, ("infiniband", "roce", "nvlink"), DEFAULT_INTER_NODE)):
            current = combo.currentData()
            was = combo.blockSignals(True)
            combo.clear()
            combo.addItem(f"auto ({default})" if default else "auto", AUTO)
            for name, tip in interconnect_names(kinds):
                combo.addItem(name, name)
                combo.setItemData(combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
            combo.setCurrentIndex(max(0, combo.findData(current if current is not None else AUTO)))
            combo.blockSignals(was)

    def widgets(self):
        return (self.world_spin, self.tp_spin, self.sp_box, self.per_node_spin, self.intra_combo, self.inter_combo)

    def connect(self, panel) -> None:
        self.world_spin.valueChanged.connect(lambda v: panel._change("world_size", world_size=v))
        self.tp_spin.valueChanged.connect(lambda v: panel._change("tp_size", tp_size=v))
        self.sp_box.toggled.connect(lambda on: panel._change("sequence_parallel", sequence_parallel=on))
        self.per_node_spin.valueChanged.connect(
            lambda v: panel._cluster_change("gpus_per_node", gpus_per_node=v or None))
        self.intra_combo.currentIndexChanged.connect(
            lambda _i: panel._cluster_change("intra", intra=self.intra_combo.currentData() or None))
        self.inter_combo.currentIndexChanged.connect(
            lambda _i: panel._cluster_change("inter", inter=self.inter_combo.currentData() or None))
        self.world_spin.tooLarge.connect(lambda text: panel._too_large("world_size", "GPU count", text))

    def render(self, state, show, source) -> None:
        """Redraw from ``state`` (signals blocked by the caller's blockers on ``widgets()``)."""
        options = state.workload.options
        chosen = vocab.strategy(options.strategy)
        several = chosen.name != "none"
        self.world_spin.setSuffix(" GPU" if options.world_size == 1 else " GPUs")
        if show("world_size", "strategy") and source != "world_size":
            self.world_spin.setValue(options.world_size)
        if show("tp_size", "strategy", "world_size") and source != "tp_size":
            self.tp_spin.setValue(options.tp_size)
        if show("sequence_parallel", "strategy") and source != "sequence_parallel":
            self.sp_box.setChecked(options.sequence_parallel)
        cluster = state.cluster
        if show("cluster") and source != "gpus_per_node":
            self.per_node_spin.setValue(cluster.gpus_per_node or 0)
        for name, combo in (("intra", self.intra_combo), ("inter", self.inter_combo)):
            if show("cluster") and source != name:
                combo.setCurrentIndex(max(0, combo.findData(getattr(cluster, name) or AUTO)))
        self.world_spin.setEnabled(several)
        # tp uses the whole world; only fsdp+tp takes a degree
        self.tp_spin.setEnabled(chosen.name == "fsdp+tp")
        self.tp_label.setEnabled(chosen.name == "fsdp+tp")
        self.sp_box.setEnabled(chosen.tensor_parallel)
        for widget in (self.per_node_spin, self.intra_combo, self.inter_combo):
            widget.setEnabled(several)
