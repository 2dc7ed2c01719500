"""The one base for errors the user can act on, shared by every room (engine, hardware, cli, gui) without
any of them importing another: the CLI prints the message in one line (exit 2), the GUI shows it next
to the field named by ``field``."""
from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for, explained in plain words."""

    field: str | None = None  # which input caused it: "model", "input", "gpu", "file", ...

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        if field is not None:
            self.field = field
