"""Command-line interface: one module per subcommand, each with ``register(subparsers)``
that sets ``func(args) -> int`` as the parser default; a subcommand writes its answer with ``emit``.
Errors the user can act on print one line. A user's model file runs in a child process (cli.isolation)."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from torchbudget.engine.errors import UserError
from torchbudget.engine.user_code import (STARTING, current_stage, is_file_spec, model_file_problem, report_stage,
                                         split_file_spec, system_exit_message)

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


def emit(args: argparse.Namespace, text: str) -> None:
    """A subcommand's answer (table or JSON): to the real stdout, which user code never writes to."""
    args.out.write(text + "\n")


def run_cli(argv: list[str]) -> int:
    from torchbudget.cli import isolation

    parser = build_parser()
    args = parser.parse_args(argv)
    if isolation.is_child():
        isolation.child_main(lambda out: _run_here(args, argv, out), model=args.model)   # never returns
    if _isolate(args):
        problem = model_file_problem(split_file_spec(args.model)[0])
        if problem:   # said at once, without starting a child that imports PyTorch to say it
            return _usage_error(problem)
        return isolation.run_isolated(argv, args.timeout, sys.stdout)
    return _run_here(args, argv, sys.stdout)


def _isolate(args: argparse.Namespace) -> bool:
    """A user .py file runs in a child unless --no-isolation; registry models have no user code."""
    if args.command not in TRACING_SUBCOMMANDS or not getattr(args, "model", None) or args.no_isolation:
        return False
    return is_file_spec(args.model)


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _run_here(args: argparse.Namespace, argv: list[str], out) -> int:
    """The subcommand in this process. Whatever user code prints goes to stderr; the answer to ``out``."""
    debug = "--debug" in argv
    args.out = out
    report_stage(STARTING)   # a stage left over from an earlier run in this process is not this run's
    if args.command in TRACING_SUBCOMMANDS:
        from torchbudget.engine.process import freeze_startup_objects

        freeze_startup_objects()  # this process is ours: see the function's note
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return int(args.func(args) or 0)
    except UserError as exc:
        if debug:
            raise
        return _usage_error(str(exc))
    except SystemExit as exc:   # our subcommands never exit: the model file's code did (sys.exit, exit())
        if debug:
            raise
        return _usage_error(system_exit_message(exc, current_stage()))
    except KeyboardInterrupt:
        return 130
    except Exception:
        raise   # our bug: its traceback is the report
    except BaseException as exc:  # noqa: BLE001 - only user code raises other BaseExceptions (class X(BaseException))
        if debug:
            raise
        return _usage_error(f"the model file raised {type(exc).__name__}: {_first_line(exc)} while {current_stage()}")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."
