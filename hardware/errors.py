"""The hardware room's own errors (it imports nothing from engine/)."""
from __future__ import annotations

from torchbudget.errors import UserError


class UnknownGpuError(UserError):
    field = "gpu"


class SpecFileError(UserError):
    """A GPU spec file is malformed; the message names file, entry and field."""

    field = "gpu"


class UnknownInterconnectError(UserError):
    """An interconnect name that the table does not know; the message names the closest ones."""

    field = "interconnect"


class InterconnectFileError(SpecFileError):
    """An interconnect table (built-in or the user's) is malformed; the message names file, entry and field."""

    field = "interconnect"


class ClusterError(UserError):
    """A cluster that cannot exist (world size, GPUs per node, an NVLink domain too small)."""

    field = "world_size"
