"""The per-layer tree: a thin QAbstractItemModel over ``AnalysisResult.modules`` plus the plan's
per-module latency, and the proxy that sorts and filters it (a match keeps its ancestors visible)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QSortFilterProxyModel, Qt

from torchbudget.engine.report.units import human_bytes, human_count, human_ms
from torchbudget.engine.results import AnalysisResult, ModuleNode

SORT_ROLE = Qt.ItemDataRole.UserRole + 1   # raw number (or text) used for sorting and export


@dataclass(frozen=True)
class ModuleLatency:
    bound_s: float          # roofline lower bound summed over the module's forward ops
    limiter: str            # "compute" | "memory"


COLUMNS = ("Module", "Type", "Output shape", "Params", "MACs", "FLOPs", "Activations", "Time bound", "Limit")
COLUMN_TIPS = (
    "Module path inside the model; ⚠ marks modules with ops that have no FLOP formula (not counted).",
    "The module's class.",
    "Shape of the module's forward output(s) for the current input.",
    "Parameters, inclusive of children; shared/tied weights counted once.",
    "Multiply-accumulates in the forward pass (1 MAC = one multiply + one add), inclusive of children.",
    "Floating-point operations in the forward pass; for matmul/conv FLOPs = 2 × MACs.",
    "Bytes of this module's forward outputs (what it contributes to activation memory).",
    "Roofline lower bound on the selected GPU: max(FLOPs / peak FLOP/s, bytes moved / bandwidth) per op, summed "
    "over the module's ops (forward, plus backward and optimizer in training). Assumes datasheet peaks, perfect "
    "overlap and no launch overhead, so real kernels are slower.",
    "compute: arithmetic time exceeds memory-traffic time at the peaks; memory: the other way round.",
)


def _shape_text(shapes: tuple[tuple[int, ...], ...]) -> str:
    return ", ".join("×".join(str(d) for d in s) for s in shapes)


class LayerTreeModel(QAbstractItemModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._nodes: dict[str, ModuleNode] = {}
        self._root_path: str | None = None
        self._latency: Mapping[str, ModuleLatency] = {}
        self._uncounted: dict[str, list[str]] = {}

    # -- data in --------------------------------------------------------------
    def set_result(self, result: AnalysisResult | None, latency: Mapping[str, ModuleLatency] | None = None):
        self.beginResetModel()
        self._nodes = {n.path: n for n in result.modules} if result else {}
        self._root_path = result.modules[0].path if result and result.modules else None
        self._latency = dict(latency or {})
        self._uncounted = {}
        for op in (result.uncounted_ops if result else ()):
            for path in op.modules:
                self._uncounted.setdefault(path, []).append(op.op)
        self.endResetModel()

    def node(self, index: QModelIndex) -> ModuleNode | None:
        return self._nodes.get(index.internalPointer()) if index.isValid() else None

    # -- tree structure -----------------------------------------------------------
    def index(self, row, column, parent=QModelIndex()):
        if not self.hasIndex(row, column, parent):
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, self._root_path)
        children = self._nodes[parent.internalPointer()].children
        return self.createIndex(row, column, children[row])

    def parent(self, index=QModelIndex()):
        if not index.isValid():
            return QModelIndex()
        node = self._nodes[index.internalPointer()]
        if node.parent is None or node.parent not in self._nodes:
            return QModelIndex()
        parent = self._nodes[node.parent]
        if parent.parent is None or parent.parent not in self._nodes:
            return self.createIndex(0, 0, parent.path)
        row = self._nodes[parent.parent].children.index(parent.path)
        return self.createIndex(row, 0, parent.path)

    def rowCount(self, parent=QModelIndex()):
        if parent.column() > 0:
            return 0
        if not parent.isValid():
            return 1 if self._root_path is not None else 0
        return len(self._nodes[parent.internalPointer()].children)

    def columnCount(self, parent=QModelIndex()):
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMN_TIPS[section]
        return None

    # -- cells ------------------------------------------------------------------
    def raw_value(self, node: ModuleNode, column: int):
        latency = self._latency.get(node.path)
        return (
            node.path or node.name, node.type_name, _shape_text(node.output_shapes), node.params,
            node.macs, node.flops, node.activation_bytes,
            latency.bound_s if latency else None, latency.limiter if latency else "",
        )[column]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        node = self.node(index)
        if node is None:
            return None
        column = index.column()
        if role == SORT_ROLE:
            value = self.raw_value(node, column)
            return -1.0 if value is None else value
        if role == Qt.ItemDataRole.DisplayRole:
            value = self.raw_value(node, column)
            if column == 0:
                flag = "⚠ " if node.path in self._uncounted else ""
                return flag + (node.name if node.path else node.name or "(model)")
            if column in (3, 4, 5):
                return human_count(value)
            if column == 6:
                return human_bytes(value)
            if column == 7:
                return "" if value is None else human_ms(value * 1e3)
            return value
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 0 and node.path in self._uncounted:
                ops = ", ".join(sorted(set(self._uncounted[node.path])))
                return f"{node.path}: not counted (no FLOP formula): {ops}"
            if column == 0:
                return node.path or node.name
            return COLUMN_TIPS[column]
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def rows_flat(self) -> list[ModuleNode]:
        """Every module in pre-order (the engine's order), for CSV export."""
        return list(self._nodes.values())


class LayerFilterProxy(QSortFilterProxyModel):
    """Case-insensitive search over module path and type; matching children keep their parents."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setSortRole(SORT_ROLE)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.only_uncounted = False
        self._needle = ""

    def set_search(self, text: str):
        self.beginFilterChange()
        self._needle = text.strip().lower()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_only_uncounted(self, enabled: bool):
        self.beginFilterChange()
        self.only_uncounted = enabled
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row, source_parent):
        model: LayerTreeModel = self.sourceModel()
        node = model.node(model.index(source_row, 0, source_parent))
        if node is None:
            return False
        if self.only_uncounted and node.path not in model._uncounted:
            return False
        if not self._needle:
            return True
        return self._needle in f"{node.path} {node.type_name}".lower()
