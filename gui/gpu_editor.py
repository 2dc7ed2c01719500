"""Dialog to describe a custom GPU (name, memory, bandwidth, peak rates); saved to the user hardware file
through ``hardware.user_file.save_user_gpu``, which validates it. When saving fails (an invalid entry, a
full disk) the dialog stays open and says why, so nothing typed is lost."""
from __future__ import annotations

from typing import Callable

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLineEdit

from torchbudget.engine.errors import UserError
from torchbudget.gui.field_error import FieldError
from torchbudget.hardware.spec import GpuSpec
from torchbudget.hardware.spec_file import what_if_available_bytes

GIB = 2**30


def _spin(maximum: float, suffix: str, decimals: int = 1, tip: str = "") -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.0, maximum)
    spin.setDecimals(decimals)
    spin.setSuffix(suffix)
    spin.setToolTip(tip)
    return spin


class GpuEditorDialog(QDialog):
    def __init__(self, parent=None, base: GpuSpec | None = None, save: Callable[[GpuSpec], None] | None = None):
        """``save``: called with the spec when Save is pressed; a UserError it raises is shown here."""
        super().__init__(parent)
        self._save = save
        self.saved: GpuSpec | None = None
        self.setWindowTitle("Custom GPU")
        form = QFormLayout(self)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("e.g. My lab GPU")
        self.vendor_edit = QLineEdit("NVIDIA")
        self.memory = _spin(4096, " GiB", 1, "Total device memory")
        self.bandwidth = _spin(100000, " GB/s", 0, "Memory bandwidth, 1 GB = 10⁹ bytes")
        self.peaks = {key: _spin(100000, " TFLOPS", 1, f"Dense {key} peak; 0 = not supported")
                      for key in ("fp32", "tf32", "fp16", "bf16")}
        form.addRow("Name", self.name_edit)
        form.addRow("Vendor", self.vendor_edit)
        form.addRow("Memory", self.memory)
        form.addRow("Bandwidth", self.bandwidth)
        for key, spin in self.peaks.items():
            form.addRow(f"Peak {key}", spin)
        if base is not None:
            self.name_edit.setText(f"{base.name} (custom)")
            self.vendor_edit.setText(base.vendor)
            self.memory.setValue(base.memory_bytes / GIB)
            self.bandwidth.setValue(base.bandwidth_gbs)
            for key, spin in self.peaks.items():
                spin.setValue(base.peak_tflops.get(key) or 0.0)
        self.error = FieldError()
        form.addRow(self.error)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)

    def accept(self):
        spec = self.spec()
        if self._save is not None:
            try:
                self._save(spec)
            except UserError as exc:
                self.error.show_message(str(exc))
                return
        self.saved = spec
        super().accept()

    def spec(self) -> GpuSpec:
        memory = int(self.memory.value() * GIB)
        return GpuSpec(
            name=self.name_edit.text().strip(), vendor=self.vendor_edit.text().strip() or "NVIDIA",
            memory_bytes=memory, available_memory_bytes=what_if_available_bytes(memory),   # same rule as database entries
            bandwidth_gbs=self.bandwidth.value(),
            peak_tflops={k: (s.value() or None) for k, s in self.peaks.items()},
            source="user", origin="user",
        )
