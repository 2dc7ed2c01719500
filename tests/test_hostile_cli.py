"""Hostile input on the command line: option values, input shapes, model names, and user model files that
crash, exit, hang, print or parse arguments. Each bad input ends in one ``error:`` line on stderr and exit 2
(never a traceback, a hang, or text on stdout that breaks ``--json``).

Most cases run ``run_cli`` in this process (cheap). The ones that need the isolation itself (a crash, a hard
exit, a hang, prints at the file-descriptor level) run ``python main.py`` as a user would: each costs one
child process importing PyTorch (~3.5 s of CPU), so they are few and each checks all it can."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.hardware_fakes import isolated_config  # noqa: F401
from tests.hostile_support import (ROOT, TINY_MODEL, assert_one_error, cli, main_py, process_alive, strict_json,
                                   write)


@pytest.fixture(autouse=True)
def _own_config(isolated_config):  # noqa: F811 - every case reads an empty user GPU file, never the real one
    yield


# ------------------------------------------------------------------------------------ options and shapes
@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_timeout_must_be_positive_seconds(capsys, tmp_path, value):
    model = write(tmp_path, "net.py", TINY_MODEL)
    code, out, err = cli(capsys, "analyze", f"{model}:Net", "--timeout", value)
    assert code == 2 and out == ""
    assert f"argument --timeout: must be a positive number of seconds, got '{value}'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("shape, fragments", [
    ("1x3x" + "9" * 40 + "x2", ["dimension '" + "9" * 40 + "' is too large", "2**63 - 1 bytes"]),
    ("1x3x4000000000x4000000000", ["input '1x3x4000000000x4000000000' is too large", "4.8e+19 elements of float32",
                                   "2**63 - 1 bytes"]),
    ("3000000000x3000000000:int64", ["is too large", "elements of int64"]),
    ("1x3x" + "7" * 5000, ["is too large", "..."]),   # past int()'s 4300-digit limit too
    ("0x3", ["malformed input shape '0x3'", "positive integer"]),
    ("-1x3", ["malformed input shape '-1x3'"]),
    ("1_000x3", ["malformed input shape '1_000x3'"]),
    ("\u0661x3", ["malformed input shape"]),          # an Arabic-Indic digit: int() would take it
    ("1e9x3", ["malformed input shape '1e9x3'"]),
    ("1x" * 100 + "1", ["has 101 dimensions; at most 64"]),
    ("x", ["malformed input shape 'x'"]),
    (",,", ["no input shape given"]),
    ("1x3:int99", ["unknown dtype 'int99'"]),
    ("=1x3", ["input name '' in '=1x3' is not a valid identifier"]),
    ("ids=1x8:int64,1x8", ["either name every input"]),
])
def test_hostile_input_shapes(capsys, shape, fragments):
    code, out, err = cli(capsys, "analyze", "resnet18", f"--input={shape}", "--json")
    line = assert_one_error(code, out, err, *fragments)
    assert len(line) < 400


def test_tensor_overflow_inside_the_model_names_the_layer(capsys):
    # the input itself is 7.7e18 bytes (allowed); conv1's output would be 4.1e19 bytes
    code, out, err = cli(capsys, "analyze", "resnet18", "--input", "1x3x800000000x800000000")
    assert_one_error(code, out, err, "conv1 (Conv2d) would make a tensor larger than torch can hold")


@pytest.mark.parametrize("kwargs, fragments", [
    ("[" * 100_000, ["--kwargs"]),
    ("[1, 2]", ["--kwargs must be a JSON object"]),
    ("{num_classes: 10}", ["--kwargs is not valid JSON"]),
    ('{"num_classes": NaN}', ["building resnet18 failed"]),
])
def test_hostile_kwargs(capsys, kwargs, fragments):
    code, out, err = cli(capsys, "analyze", "resnet18", "--kwargs", kwargs)
    line = assert_one_error(code, out, err, *fragments)
    assert len(line) < 600


@pytest.mark.parametrize("name, fragments", [
    ("", ["name a model"]),
    ("resnet" * 10_000, ["unknown model 'resnetresnet", "...'"]),
    ("res\nnet18", ["unknown model 'res\\nnet18'"]),
    ("\x1b[31mred\x1b[0m", ["unknown model '\\x1b[31mred"]),
    ("../../etc/passwd", ["'../../etc/passwd' does not exist"]),   # a path: a config.json or model folder
])
def test_hostile_model_names(capsys, name, fragments):
    code, out, err = cli(capsys, "plan", name, "--gpu", "T4", "--json")
    line = assert_one_error(code, out, err, *fragments)
    assert len(line) < 400 and "\x1b" not in line


def test_missing_model_file_is_said_without_a_child(capsys, tmp_path, monkeypatch):
    from torchbudget.cli import isolation

    monkeypatch.setattr(isolation, "run_isolated", lambda *a: pytest.fail("started a child for a missing file"))
    code, out, err = cli(capsys, "analyze", f"{tmp_path / 'absent.py'}:Net")
    assert_one_error(code, out, err, "absent.py' does not exist")
    (tmp_path / "folder.py").mkdir()
    code, out, err = cli(capsys, "plan", f"{tmp_path / 'folder.py'}", "--gpu", "T4")
    assert_one_error(code, out, err, "folder.py' is not a file")


# ------------------------------------------------------------- user files, in this process (--no-isolation)
# The same engine.sources code runs in the child; --no-isolation keeps these cases cheap.
@pytest.mark.parametrize("source, spec, fragments", [
    ("import sys\nsys.exit(0)\n" + TINY_MODEL, "Net",
     ["the model file exited (sys.exit(0)) while importing net.py, before the analysis finished"]),
    (TINY_MODEL.replace("super().__init__()", "super().__init__(); import sys; sys.exit('bye')"), "Net",
     ["the model file exited (sys.exit('bye')) while building Net"]),
    (TINY_MODEL.replace("return self.fc(x)", "exit()"), "Net",
     ["the model file exited (sys.exit()) while tracing Net"]),
    ("class Boom(BaseException):\n    pass\n" + TINY_MODEL.replace("return self.fc(x)", "raise Boom('kaboom\\nmore')"),
     "Net", ["the model file raised Boom: kaboom while tracing Net"]),
    (b"import torch.nn as nn\nname = '\xff\xfe caf\xe9'\n", "Net", ["importing net.py failed at net.py", "SyntaxError"]),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "Net", ["importing net.py failed", "SyntaxError"]),
    ("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n", "Net", ["importing net.py failed"]),
    (TINY_MODEL.replace("super().__init__()", "super().__init__(); raise ValueError('first line\\nsecond line')"),
     "Net", ["building Net failed at net.py:5: ValueError: first line"]),
    ("EXAMPLE_INPUTS = 5\n" + TINY_MODEL, "Net", ["EXAMPLE_INPUTS in net.py must be a shape string", "not a int"]),
    ("EXAMPLE_INPUTS = '1x" + "9" * 30 + "'\n" + TINY_MODEL, "Net", ["is too large"]),
    ("def __getattr__(name):\n    raise RuntimeError('no ' + name)\n" + TINY_MODEL, "Missing",
     ["reading Missing from net.py failed: RuntimeError: no Missing"]),
    ("import torch.nn as nn\ndef make():\n    return 'not a module'\n", "make", ["returned a str, not a torch.nn.Module"]),
])
def test_hostile_model_files_in_process(capsys, tmp_path, source, spec, fragments):
    model = write(tmp_path, "net.py", source)
    code, out, err = cli(capsys, "analyze", f"{model}:{spec}", "--json", "--no-isolation")
    line = assert_one_error(code, out, err, *fragments)
    assert len(line) < 500


def test_prints_argparse_and_sibling_engine_in_process(capsys, tmp_path):
    """--json stays parseable with prints everywhere; argparse at import sees [path]; `import engine` finds the
    file's own engine.py (TorchBudget's is torchbudget.engine)."""
    write(tmp_path, "engine.py", "WIDTH = 7\n")
    model = write(tmp_path, "net.py", """
        import argparse, sys
        import engine
        import torch.nn as nn
        print("print at import", sys.argv)
        parser = argparse.ArgumentParser()
        parser.add_argument("--width", type=int, default=engine.WIDTH)
        ARGS = parser.parse_args()
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                print("print in __init__")
                self.fc = nn.Linear(4, ARGS.width)
            def forward(self, x):
                print("print in forward")
                return self.fc(x)
    """)
    argv_before = list(sys.argv)
    code, out, err = cli(capsys, "analyze", f"{model}:Net", "--input", "2x4", "--json", "--no-isolation")
    assert code == 0, err
    assert strict_json(out)["totals"]["params"] == 4 * 7 + 7
    assert f"print at import {[str(model)]}" in err and "print in __init__" in err and "print in forward" in err
    assert sys.argv == argv_before


# ------------------------------------------------------------------------- user files, isolated (children)
CRASHES = {
    "segfault at import": ("import ctypes\nctypes.string_at(0)\n" + TINY_MODEL, "the model file crashed "
                           "(segmentation fault) while importing net.py"),
    "abort in forward": ("import os\n" + TINY_MODEL.replace("return self.fc(x)", "os.abort()"),
                         "the model file crashed (aborted) while tracing Net"),
    "os._exit(3) at import": ("import os\nos._exit(3)\n", "the model file called os._exit(3) while importing net.py"),
    "os._exit(0) in __init__": ("import os\n" + TINY_MODEL.replace("super().__init__()", "os._exit(0)"),
                                "the model file called os._exit(0) while building Net"),
    "input() at import": ("x = input()\n" + TINY_MODEL, "importing net.py failed at net.py:1: EOFError"),
}


@pytest.mark.parametrize("case", list(CRASHES))
def test_user_code_that_ends_the_process(tmp_path, case):
    source, expected = CRASHES[case]
    model = write(tmp_path, "net.py", source)
    code, out, err, seconds = main_py("analyze", f"{model}:Net", "--input", "1x4", "--json",
                                      env={"TORCHBUDGET_CONFIG_DIR": str(tmp_path)})
    assert_one_error(code, out, err, expected)
    assert seconds < 60


def test_endless_loop_is_stopped_at_the_timeout(tmp_path):
    model = write(tmp_path, "net.py", "import time\n" + TINY_MODEL.replace(
        "super().__init__()", "super().__init__()\n        while True:\n            time.sleep(0.05)"))
    code, out, err, seconds = main_py("plan", f"{model}:Net", "--input", "1x4", "--gpu", "T4", "--timeout", "20",
                                      env={"TORCHBUDGET_CONFIG_DIR": str(tmp_path)})
    assert_one_error(code, out, err, "the model file did not finish within 20 s (--timeout) while building Net")
    assert 20 <= seconds < 50


def test_isolated_file_prints_threads_and_leftover_processes(tmp_path):
    """One child, everything a file may do that must not reach stdout or keep the CLI waiting: print at
    import/__init__/forward, write to file descriptor 1 directly, parse its own argv, import its sibling
    engine.py (first on sys.path, also for a lazy import in forward), start a process and a non-daemon
    thread that outlive the analysis."""
    write(tmp_path, "engine.py", "WIDTH = 7\n")
    write(tmp_path, "helper.py", "K = 2\n")
    pid_file = tmp_path / "sleeper.pid"
    model = write(tmp_path, "net.py", f"""
        import argparse, os, subprocess, sys, threading, time
        import engine
        import torch.nn as nn
        print("print at import", sys.argv)
        os.write(1, b"fd-level write at import\\n")
        parser = argparse.ArgumentParser()
        parser.add_argument("--width", type=int, default=engine.WIDTH)
        ARGS = parser.parse_args()
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(sleeper.pid))
        threading.Thread(target=time.sleep, args=(120,)).start()
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                print("print in __init__")
                self.fc = nn.Linear(4, ARGS.width)
            def forward(self, x):
                import helper
                print("print in forward", sys.argv)
                return self.fc(x) * helper.K
    """)
    code, out, err, seconds = main_py("analyze", f"{model}:Net", "--input", "2x4", "--json",
                                      env={"TORCHBUDGET_CONFIG_DIR": str(tmp_path)})
    assert code == 0, err
    data = strict_json(out)
    assert data["totals"]["params"] == 4 * 7 + 7 and data["layers"][1]["output_shapes"] == [[2, 7]]
    argv = str([str(model)])
    for text in (f"print at import {argv}", "fd-level write at import", "print in __init__",
                 f"print in forward {argv}"):
        assert text in err
    assert "Traceback" not in err and seconds < 60
    assert not process_alive(int(pid_file.read_text()))


def test_a_killed_cli_leaves_no_child_behind(tmp_path):
    """SIGKILL on the CLI (a CI job cancelled, `kill -9`): its child, in an endless loop, ends too."""
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    model = write(tmp_path, "net.py", f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        while True:
            time.sleep(0.05)
    """)
    cli_process = subprocess.Popen([sys.executable, "main.py", "analyze", f"{model}:Net"], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "TORCHBUDGET_CONFIG_DIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and cli_process.poll() is None
            time.sleep(0.1)
        child = int(pid_file.read_text())
        assert process_alive(child)
        cli_process.send_signal(signal.SIGKILL)
        cli_process.wait(10)
        deadline = time.monotonic() + 10
        while process_alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_alive(child)
    finally:
        cli_process.kill()


def test_isolated_errors_and_debug_pass_through(tmp_path):
    model = write(tmp_path, "net.py", TINY_MODEL)
    code, out, err, _ = main_py("analyze", f"{model}:Net", "--input", "1x5", "--debug",
                                env={"TORCHBUDGET_CONFIG_DIR": str(tmp_path)})
    assert code == 1 and out == ""
    assert "Traceback" in err and "ShapeMismatchError" in err   # --debug asked for it, from the child


def test_json_output_of_an_isolated_plan_is_the_whole_answer(capsys, tmp_path):
    """run_cli in this process isolates too: the child's answer reaches this process's stdout intact."""
    model = write(tmp_path, "net.py", "print('noise at import')\n" + TINY_MODEL)
    code, out, err = cli(capsys, "plan", f"{model}:Net", "--input", "3x4", "--gpu", "T4", "--json",
                         "--no-max-batch")
    assert code == 0, err
    data = strict_json(out)
    assert data["inputs"] == ["3x4"] and data["verdict"] == "fits"
    assert "noise at import" in err and "noise" not in out
    assert json.dumps(data)  # the whole document, not a prefix


def test_the_parent_never_imports_torch(tmp_path, monkeypatch):
    """Deciding to isolate costs an interpreter start and argparse, not a second PyTorch import."""
    import subprocess

    code = ("import sys; from torchbudget.cli import build_parser, _isolate; "
            f"args = build_parser().parse_args(['analyze', {str(tmp_path / 'net.py')!r}]); "
            "print(_isolate(args), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.split() == ["True", "False"], done.stderr


# ----------------------------------------------------------------------------- how a child's end is worded
@pytest.mark.parametrize("returncode, stage, timed_out, expected", [
    (-11, "importing net.py", False, "the model file crashed (segmentation fault) while importing net.py"),
    (-6, "tracing Net", False, "the model file crashed (aborted) while tracing Net"),
    (-7, "tracing Net", False, "the model file crashed (bus error) while tracing Net"),
    (-8, "building Net", False, "the model file crashed (floating point exception) while building Net"),
    (-4, "building Net", False, "the model file crashed (illegal instruction) while building Net"),
    (-9, "tracing Net", False, "the model file crashed (killed; the system may have run out of memory) while tracing Net"),
    (3, "importing net.py", False, "the model file called os._exit(3) while importing net.py, before the analysis finished"),
    (0, "tracing Net", False, "the model file called os._exit(0) while tracing Net"),
    (-9, "tracing Net", True, "the model file did not finish within 2.5 s (--timeout) while tracing Net; it was stopped"),
    (-9, "starting", True, "the analysis process did not reach the model file within 2.5 s (--timeout)"),
    (1, "starting", False, "the analysis process ended with exit status 1 before it loaded the model file"),
    (-11, "starting", False, "the analysis process crashed (segmentation fault) before it loaded the model file"),
])
def test_every_end_of_a_child_is_one_worded_line(returncode, stage, timed_out, expected):
    from torchbudget.engine.user_code import ended_message

    message = ended_message(returncode, stage, timed_out=timed_out, timeout_s=2.5)
    assert message.startswith(expected) and "\n" not in message


@pytest.mark.parametrize("spec, is_file, path, attribute", [
    ("net.py:Net", True, "net.py", "Net"),
    ("  dir/net.py  ", True, "dir/net.py", None),
    ("C:/models/net.py:make", True, "C:/models/net.py", "make"),
    ("net.py:1bad", False, "net.py:1bad", None),   # not an identifier: not a file spec either
    ("resnet50", False, "resnet50", None),
])
def test_model_specs_parse_without_torch(spec, is_file, path, attribute):
    from torchbudget.engine.user_code import is_file_spec, split_file_spec

    assert is_file_spec(spec) is is_file
    assert split_file_spec(spec) == (Path(path), attribute)
