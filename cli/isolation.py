"""User model files run in a child process: a crash, ``os._exit``, ``sys.exit``, an endless loop or stray
prints in the user's code end in one line on stderr (exit 2), never in a dead or hung CLI or broken JSON.

Parent (this process, which never imports PyTorch on this path): starts ``python -c BOOT <same argv>`` with
``CHILD_ENV`` set, in its own process group, its stdin a pipe the parent never writes to (the child ends its
group when that pipe closes: a parent killed outright leaves no orphan looping forever; the user's code reads
stdin from /dev/null); forwards the child's stderr as it comes;
reads the child's stdout, which carries only JSON lines: ``{"stage": ...}`` (what user code is doing:
engine.user_code) and finally ``{"code": N, "stdout": TEXT}``; kills the group after ``--timeout``.

Child: moves its stdout aside as that channel and points file descriptor 1 at stderr, so whatever the user's
code prints (Python or C) goes to stderr; runs the subcommand as ``run_cli`` would in-process, sends the
result and leaves with ``os._exit`` (user atexit handlers and threads cannot hang or change its end)."""
from __future__ import annotations

import codecs
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

from torchbudget.engine.user_code import STARTING, ended_message, is_file_spec, set_stage_listener, split_file_spec

CHILD_ENV = "TORCHBUDGET_CLI_CHILD"
DEFAULT_TIMEOUT_S = 120.0
_READ_CHUNK = 65536
# after the child ended: how long its pipes may stay open (a grandchild the user's code left behind holds
# them) before the parent stops waiting for them
_DRAIN_S = 2.0


def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def _root() -> str:
    """The folder from which ``import torchbudget`` works (a checkout's root, or site-packages)."""
    import torchbudget

    return os.path.dirname(os.path.dirname(os.path.abspath(torchbudget.__file__)))


# sys.path[0] is the folder torchbudget lives in, as for ``python main.py`` (not the current folder, which
# -c would put there: a torch.py or cli.py in it must not shadow ours); the model file's own folder goes
# first later (engine.sources).
_BOOT = ("import sys; sys.path[0] = {root!r}; from torchbudget.cli import run_cli; "
         "sys.exit(run_cli(sys.argv[1:]))")


class _Channel:
    """What the child has said on its stdout: the latest stage and, once it finished, its answer."""

    def __init__(self):
        self.stage = STARTING
        self.answer: dict | None = None
        self.noise: list[str] = []   # lines that are not ours (should not happen: fd 1 is stderr in the child)

    def read(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self.noise.append(line)
                continue
            if isinstance(message, dict) and "stage" in message:
                self.stage = str(message["stage"])
            elif isinstance(message, dict) and "code" in message:
                self.answer = message


def _forward(stream, target) -> None:
    """Copy the child's stderr to ours as it comes (decoded incrementally: a character may span chunks)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    read = getattr(stream, "read1", stream.read)
    while True:
        chunk = read(_READ_CHUNK)
        if not chunk:
            break
        text = decoder.decode(chunk)
        if text:
            target.write(text)
            target.flush()
    tail = decoder.decode(b"", final=True)
    if tail:
        target.write(tail)


def _kill_group(process: subprocess.Popen) -> None:
    """The child and whatever its user code started (same process group)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass


def run_isolated(argv: list[str], timeout_s: float, out) -> int:
    """Run ``argv`` (the CLI's own arguments) in a child; its answer is written to ``out``, its stderr to
    ours. Returns the exit status: the child's own, or 2 with one line naming how the model file ended."""
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    command = [sys.executable, "-c", _BOOT.format(root=_root()), *argv]
    popen_extra = {"start_new_session": True} if os.name == "posix" else {}
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env, **popen_extra)
    channel = _Channel()
    readers = [threading.Thread(target=channel.read, args=(process.stdout,), daemon=True),
               threading.Thread(target=_forward, args=(process.stderr, sys.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    except KeyboardInterrupt:
        _kill_group(process)
        process.wait()
        return 130
    finally:
        _kill_group(process)   # on success too: nothing the user's code started outlives the analysis
        process.stdin.close()
    process.wait()
    deadline = time.monotonic() + _DRAIN_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    answer = channel.answer
    if answer is not None and not timed_out:
        text = answer.get("stdout") or ""
        if text:
            out.write(text)
            out.flush()
        return int(answer.get("code", 1))
    sys.stderr.flush()
    print(f"error: {ended_message(process.returncode, channel.stage, timed_out=timed_out, timeout_s=timeout_s)}",
          file=sys.stderr)
    return 2


def _watch_parent() -> None:
    """Our stdin is a pipe from the parent, which never writes to it: end of file means the parent is gone
    (killed, even with SIGKILL), and this child and whatever the user's code started go too. The user's
    code gets /dev/null as stdin (``input()`` fails at once instead of waiting for the timeout)."""
    watched = os.dup(0)   # not inheritable: processes the user's code starts do not hold the pipe open
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    def watch() -> None:
        try:
            while os.read(watched, 4096):
                pass
        except OSError:
            pass
        if hasattr(os, "killpg"):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="torchbudget-parent-watch", daemon=True).start()


def child_main(run, model: str | None = None) -> None:
    """In the child: ``run(out)`` runs the subcommand writing its answer to ``out``; returns its exit status.
    Never returns: the process ends with that status once the answer is sent. ``model``: the model spec,
    whose file sees ``sys.argv == [path]`` and its own folder first on sys.path for the whole run (its
    forward may import lazily)."""
    os.environ.pop(CHILD_ENV, None)   # a TorchBudget the user's code might start is not our child
    _watch_parent()
    if model and is_file_spec(model):
        path, _ = split_file_spec(model)
        sys.argv = [str(path)]
        sys.path.insert(0, str(path.resolve().parent))
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(2, 1)   # from here on, anything written to stdout (print, C printf) goes to stderr
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding=sys.stderr.encoding or "utf-8",
                                  errors="backslashreplace", line_buffering=True)

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    set_stage_listener(lambda stage: send({"stage": stage}))
    answer = io.StringIO()
    try:
        code = run(answer)
    except BaseException:  # noqa: BLE001 - --debug re-raises; the traceback is what the user asked for
        traceback.print_exc()
        code = 1
    set_stage_listener(None)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a stream the user's code closed
            pass
    try:
        send({"code": code, "stdout": answer.getvalue()})
    finally:
        os._exit(code)
