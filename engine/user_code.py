"""Running a user's model file safely, without PyTorch (the CLI's parent process and the GUI import this):

* what a model spec is (``path/to/file.py:Name``), parsed the same way everywhere;
* the *stage* user code is in (importing the file, building the model, tracing it), reported to a
  listener so a parent process can say what its child was doing when it died;
* the one-line message for each way a child process running user code can end without answering.

engine.sources reports the stages; cli.isolation runs the child and words its end with these helpers
(the GUI's model process may use them too)."""
from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator

FILE_SPEC_SEPARATOR = ":"
STARTING = "starting"  # the stage before any user code ran


def _has_attribute_part(spec: str) -> bool:
    head, sep, tail = spec.rpartition(FILE_SPEC_SEPARATOR)
    return bool(sep) and head.endswith(".py") and tail.isidentifier()


def is_file_spec(spec: str) -> bool:
    """``path/to/file.py`` or ``path/to/file.py:Name`` (anything else is a registry model name)."""
    spec = spec.strip()
    path_part = spec.rsplit(FILE_SPEC_SEPARATOR, 1)[0] if _has_attribute_part(spec) else spec
    return path_part.endswith(".py")


def split_file_spec(spec: str) -> tuple[Path, str | None]:
    """``path/file.py:Name`` -> (path, "Name"); ``path/file.py`` -> (path, None)."""
    spec = spec.strip()
    if _has_attribute_part(spec):
        path_text, attribute = spec.rsplit(FILE_SPEC_SEPARATOR, 1)
        return Path(path_text).expanduser(), attribute
    return Path(spec).expanduser(), None


def model_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a model file (it does not exist, is a folder...), or None. Checked before a
    child process is started for it: no need to import PyTorch to say so."""
    try:
        if not path.exists():
            return f"model file {str(path)!r} does not exist"
        if not path.is_file():
            return f"model file {str(path)!r} is not a file"
    except OSError as exc:   # a name too long for the file system, a loop of links...
        return f"model file {str(path)[:80]!r} cannot be read ({exc.strerror or exc})"
    return None


# ------------------------------------------------------------------------------------------------ stages
_listener: Callable[[str], None] | None = None
_stage = STARTING


def set_stage_listener(listener: Callable[[str], None] | None) -> None:
    """``listener(stage)`` is called on every stage change (the CLI's child sends it to its parent)."""
    global _listener
    _listener = listener


def report_stage(stage: str) -> None:
    """What user code is about to do, as words that follow "while": ``importing net.py``."""
    global _stage
    _stage = stage
    if _listener is not None:
        _listener(stage)


def current_stage() -> str:
    return _stage


@contextlib.contextmanager
def user_argv(path: Path) -> Iterator[None]:
    """``sys.argv`` as the file would see it run as a script (``[path]``), so that a file parsing its own
    arguments at import (argparse) does not read TorchBudget's."""
    saved = sys.argv
    sys.argv = [str(path)]
    try:
        yield
    finally:
        sys.argv = saved


# -------------------------------------------------------------------------------------- how a child ends
def signal_words(signum: int) -> str:
    """11 -> "segmentation fault"; unknown numbers -> "signal 42"."""
    try:
        text = signal.strsignal(signum)
    except (ValueError, AttributeError):
        text = None
    return text.lower() if text else f"signal {signum}"


def timeout_words(seconds: float) -> str:
    return f"{seconds:g} s"


def ended_message(returncode: int | None, stage: str, *, timed_out: bool = False, timeout_s: float | None = None,
                  timeout_option: str = "--timeout") -> str:
    """The one line for a child running user code that ended without giving its answer. ``stage`` is the
    last one it reported (STARTING: no user code ran yet, so the model file is not to blame)."""
    if stage == STARTING:
        if timed_out:
            return (f"the analysis process did not reach the model file within {timeout_words(timeout_s or 0)} "
                    f"({timeout_option}): starting Python and importing PyTorch took longer; raise {timeout_option}")
        how = (f"crashed ({signal_words(-returncode)})" if returncode is not None and returncode < 0
               else f"ended with exit status {returncode}")
        return f"the analysis process {how} before it loaded the model file (run with --no-isolation to see why)"
    if timed_out:
        return (f"the model file did not finish within {timeout_words(timeout_s or 0)} ({timeout_option}) "
                f"while {stage}; it was stopped (raise {timeout_option} if it is only slow)")
    if returncode is None:
        return f"the model file's process ended without an answer while {stage}"
    if returncode < 0:
        signum = -returncode
        extra = "; the system may have run out of memory" if signum == getattr(signal, "SIGKILL", 9) else ""
        return f"the model file crashed ({signal_words(signum)}{extra}) while {stage}"
    return f"the model file called os._exit({returncode}) while {stage}, before the analysis finished"


def system_exit_message(exc: BaseException, stage: str | None = None) -> str:
    """The line for a model file that raised SystemExit (``sys.exit(0)``, ``exit()``)."""
    code = getattr(exc, "code", None)
    while_ = f" while {stage}" if stage and stage != STARTING else ""
    return f"the model file exited (sys.exit({'' if code is None else repr(code)})){while_}, before the analysis finished"
