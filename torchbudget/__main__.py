"""``python -m torchbudget`` / ``torchbudget``: no arguments opens the desktop app; a subcommand runs the CLI."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from torchbudget.gui.app import run_app

        return run_app()
    import signal

    from torchbudget.cli import run_cli

    if hasattr(signal, "SIGPIPE"):
        # `torchbudget analyze ... | head` should stop quietly, not raise BrokenPipeError
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
