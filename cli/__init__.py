"""Command-line interface: one module per subcommand, each with ``register(subparsers)``
that sets ``func(args) -> int`` as the parser default. Errors the user can act on print one line."""
from __future__ import annotations

import argparse
import importlib
import sys

from torchbudget.engine.errors import UserError

SUBCOMMANDS = ("analyze", "gpus", "plan", "sweep", "compare", "validate")
TRACING_SUBCOMMANDS = {"analyze", "plan", "sweep", "compare", "validate"}


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes: use as ``parents=[common_options()]``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the whole result as JSON")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchbudget",
        description="Will this model fit on this GPU, and how fast can it run? Run without arguments for the app.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"torchbudget.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"torchbudget.cli.{name}":
                raise
            continue  # subcommand not built yet
        module.register(subparsers)
    return parser


def run_cli(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = "--debug" in argv
    if args.command in TRACING_SUBCOMMANDS:
        from torchbudget.engine.process import freeze_startup_objects

        freeze_startup_objects()  # this process is ours: see the function's note
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
