"""Errors the user can act on. The CLI prints their message (no traceback unless --debug);
the GUI shows it next to the field named by ``field``."""
from __future__ import annotations

from torchbudget.errors import UserError


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


__all__ = ["UserError", "UnknownModelError", "ModelLoadError", "InputSpecError", "ShapeMismatchError",
           "TraceError"]
