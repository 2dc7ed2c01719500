"""The hardware room's own errors (it imports nothing from engine/)."""
from __future__ import annotations

from torchbudget.errors import UserError


class UnknownGpuError(UserError):
    field = "gpu"


class SpecFileError(UserError):
    """A GPU spec file is malformed; the message names file, entry and field."""

    field = "gpu"
