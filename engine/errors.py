"""Errors the user can act on. The CLI prints their message (no traceback unless --debug);
the GUI shows it next to the field named by ``field``."""
from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for, explained in plain words."""

    field: str | None = None  # which input caused it: "model", "input", "gpu", "file", ...

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        if field is not None:
            self.field = field


class UnknownModelError(UserError):
    field = "model"


class ModelLoadError(UserError):
    field = "model"


class InputSpecError(UserError):
    field = "input"


class ShapeMismatchError(UserError):
    """Shapes broke inside the model; the message names the module path and both shapes."""

    field = "input"


class TraceError(UserError):
    """An op could not be traced; the message names the op and the module."""

    field = "model"


class UnknownGpuError(UserError):
    field = "gpu"


class SpecFileError(UserError):
    """A GPU spec file is malformed; the message names file, entry and field."""

    field = "gpu"
