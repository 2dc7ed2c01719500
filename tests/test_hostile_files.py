"""Hostile files: the user's GPU file (hardware/spec_file.py, read by every command that names a GPU) and
workload files (engine/workload.py; the app opens them, the CLI has no path that reads one, so they are
exercised through the API). Each problem is one error naming file and field, never a traceback or a hang."""
from __future__ import annotations

import json
import os

import pytest

from torchbudget.engine.api import analyze_workload
from torchbudget.engine.errors import ModelLoadError, UserError
from torchbudget.engine.workload import Workload
from torchbudget.hardware import catalog
from torchbudget.hardware.errors import SpecFileError
from torchbudget.hardware.spec_file import load_entries
from tests.hardware_fakes import isolated_config  # noqa: F401
from tests.hostile_support import TINY_MODEL, assert_one_error, cli, strict_json, write

ENTRY = 'name = "Lab"\nvendor = "NVIDIA"\nmemory_gib = 24\nbandwidth_gbs = 900\nfp32_tflops = 40\n'


def entry(**changes: str) -> str:
    """One [[gpu]] table: ENTRY with keys replaced by raw TOML values (None: left out)."""
    lines = dict(line.split(" = ", 1) for line in ENTRY.splitlines())
    lines.update(changes)
    return "[[gpu]]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items() if v is not None)


# --------------------------------------------------------------------------------------------- GPU files
@pytest.mark.parametrize("content, fragments", [
    ("[[gpu]]\nname = \"Caf\xe9\"\n".encode("latin-1"), ["not UTF-8 text (byte 0xe9 on line 2)", "save it as UTF-8"]),
    (bytes(range(256)) * 4, ["a binary file (it contains NUL bytes), not TOML text"]),
    (("x = " + "[" * 5000 + "]" * 5000 + "\n").encode(), ["nests too deeply"]),
    (("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n").encode(), ["nests too deeply"]),
    (b"[[gpu]\nname = ", ["not valid TOML"]),
    (b"gpu = \"RTX\"\n", ["'gpu' must be an array of tables"]),
    (b"[gpu]\nname = \"x\"\n", ["'gpu' must be an array of tables"]),
    (("k" * 100_000 + " = 1\n").encode(), ["unknown top-level key(s) ['kkkk", "...;"]),
    (entry(memory_gib="1e400").encode(), ["field 'memory_gib': must be a positive number, got inf"]),
    (entry(memory_gib="nan").encode(), ["field 'memory_gib': must be a positive number, got nan"]),
    (entry(memory_gib="-inf").encode(), ["must be a positive number, got -inf"]),
    (entry(memory_gib="1" + "0" * 40).encode(), ["field 'memory_gib': 1e+40 GiB is implausible"]),
    (entry(memory_gib="1e-9").encode(), ["field 'memory_gib': 1e-09 GiB is less than 1 MiB"]),
    (entry(memory_gib="0").encode(), ["must be a positive number, got 0"]),
    (entry(memory_gib='"24"').encode(), ["must be a positive number, got '24'"]),
    (entry(memory_gib="true").encode(), ["must be a positive number, got True"]),
    (entry(sm_count="1" + "0" * 30).encode(), ["field 'sm_count': 1e+30 is implausible"]),
    (entry(sm_count="1.5").encode(), ["field 'sm_count': must be a positive integer, got 1.5"]),
    (entry(fp32_tflops="[" + ", ".join(["1"] * 10_000) + "]").encode(), ["must be a positive number, got [1, 1,", "...",]),
    (entry(name="5").encode(), ["field 'name': must be a non-empty string, got 5"]),
    (entry(name='"A\\nB"').encode(), ["field 'name': must not contain control characters"]),
    (entry(name='"\\u001b[31mRed"').encode(), ["must not contain control characters"]),
    (entry(name='"' + "N" * 100_000 + '"', vendor='"Nope"').encode(), ["entry 1 ('NNNN", "...), field 'vendor'"]),
    (entry(aliases='"T4"').encode(), ["field 'aliases': must be a list of non-empty strings"]),
    (entry(aliases='[["nested"]]').encode(), ["field 'aliases': must be a list of non-empty strings"]),
    (entry(aliases='["T4"]').encode(), ["field 'aliases': 't4' is already used by entry"]),
    (entry(usable_memory_gib="20").encode(), ["renamed available_memory_gib"]),
])
def test_hostile_gpu_file_is_one_line_naming_file_and_problem(isolated_config, content, fragments):  # noqa: F811
    isolated_config.mkdir(parents=True, exist_ok=True)
    path = isolated_config / "gpus.toml"
    path.write_bytes(content)
    catalog.reload()
    with pytest.raises(SpecFileError) as caught:
        catalog.database()   # loaded as every command loads it: built-in database + this file
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 700
    for fragment in fragments:
        assert fragment in message


def test_gpu_file_that_is_a_fifo_a_folder_or_huge(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)   # opening it for reading would wait for a writer forever
    with pytest.raises(SpecFileError, match="fifo.toml: not a regular file"):
        load_entries(fifo)
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(SpecFileError, match="folder.toml: not a regular file"):
        load_entries(tmp_path / "folder.toml")
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# padding\n" * 500_000)
    with pytest.raises(SpecFileError, match=r"huge.toml: 5,000,000 bytes is too large for a GPU spec file"):
        load_entries(huge)


def test_bom_and_empty_files_load(tmp_path):
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + entry().encode())   # Windows editors write a byte-order mark
    assert [e["name"] for e in load_entries(bom)] == ["Lab"]
    empty = tmp_path / "empty.toml"
    empty.write_bytes(b"")
    assert load_entries(empty) == []


@pytest.mark.parametrize("argv", [["gpus", "--json"], ["plan", "resnet18", "--gpu", "T4", "--json"],
                                  ["compare", "alexnet", "--gpus", "T4,L4"]])
def test_broken_gpu_file_through_the_cli(capsys, isolated_config, argv):  # noqa: F811
    isolated_config.mkdir(parents=True, exist_ok=True)
    (isolated_config / "gpus.toml").write_bytes(b"\x00\x01binary\xff")
    catalog.reload()
    code, out, err = cli(capsys, *argv)
    assert_one_error(code, out, err, "gpus.toml: a binary file")


TINY_GPU = entry(name='"Tiny"', memory_gib="1", bandwidth_gbs="100", fp32_tflops="1")


@pytest.mark.parametrize("argv, rows", [
    (["plan", "resnet18", "--gpu", "Tiny", "--json"], lambda d: [d]),
    (["compare", "resnet18", "--gpus", "Tiny,T4", "--json"], lambda d: [r["plan"] for r in d["rows"]][:1]),
    (["sweep", "resnet18", "--gpus", "Tiny", "--batch", "1,2", "--json"], lambda d: []),
])
def test_a_gpu_too_small_for_the_cuda_context_plans_with_a_note(capsys, isolated_config, argv, rows):  # noqa: F811
    isolated_config.mkdir(parents=True, exist_ok=True)
    (isolated_config / "gpus.toml").write_text(TINY_GPU, encoding="utf-8")
    catalog.reload()
    code, out, err = cli(capsys, *argv)
    assert code == 0 and err == ""
    data = strict_json(out)   # no NaN or Infinity anywhere
    for plan in rows(data):
        assert plan["verdict"] == "does_not_fit" and plan["fits"] is False
        assert any("not even the CUDA context" in note for note in plan["notes"])
    if argv[0] == "sweep":
        assert all(p["per_gpu"][0]["fits"] is False for p in data["points"])


def test_a_gpu_too_small_for_the_cuda_context_in_text(capsys, isolated_config):  # noqa: F811
    isolated_config.mkdir(parents=True, exist_ok=True)
    (isolated_config / "gpus.toml").write_text(TINY_GPU, encoding="utf-8")
    catalog.reload()
    code, out, err = cli(capsys, "plan", "resnet18", "--gpu", "Tiny")
    assert code == 0 and err == ""
    assert out.startswith("resnet18") and "DOES NOT FIT" in out
    assert "Tiny offers 256.00 MiB, not even the CUDA context (512.00 MiB)" in out


# ---------------------------------------------------------------------------------------- workload files
def _workload(**changes) -> str:
    data = {"format": "torchbudget-workload/1", "model": "resnet18", "inputs": ["1x3x32x32"], "mode": "infer"}
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize("text, fragment", [
    ("{", "workload file is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "workload file nests too deeply"),
    ("[1, 2]", "not a TorchBudget workload file"),
    (_workload(format="torchbudget-workload/99"), "not a TorchBudget workload file"),
    (_workload(colour="red"), "unknown field(s) 'colour'"),
    (_workload(model=5), "'model' must be a model name"),
    (_workload(model="   "), "'model' must be a model name"),
    (_workload(inputs="1x3x32x32"), "'inputs' must be a list of shape strings"),
    (_workload(inputs=[[1, 3, 32, 32]]), "'inputs' must be a list of shape strings"),
    (_workload(inputs=["1x3x" + "9" * 40]), "workload file: input '1x3x" + "9" * 40 + "': dimension"),
    (_workload(inputs=["1x3x4000000000x4000000000"]), "workload file: input '1x3x4000000000x4000000000' is too large"),
    (_workload(model_kwargs=[1]), "'model_kwargs' must be an object"),
    (_workload(checkpointing="yes"), "'checkpointing' must be true or false, not 'yes'"),
    (_workload(mode="fly"), "workload file: unknown mode 'fly'; use one of: infer, train"),
    (_workload(precision=16), "'precision' must be a string, not 16"),
    (_workload(optimizer=["adam"]), "'optimizer' must be a string"),
])
def test_hostile_workload_files(text, fragment):
    with pytest.raises(UserError) as caught:
        Workload.from_json(text)
    message = str(caught.value)
    assert fragment in message and "\n" not in message and len(message) < 400
    assert caught.value.field == "file"


def test_workload_naming_a_file_that_exits_leaves_the_caller_running(tmp_path):
    model = write(tmp_path, "net.py", "import sys\nsys.exit(3)\n" + TINY_MODEL)
    workload = Workload.from_json(_workload(model=f"{model}:Net", inputs=["1x4"]))
    with pytest.raises(ModelLoadError, match=r"the model file exited \(sys.exit\(3\)\) while importing net.py"):
        analyze_workload(workload)


def test_workload_round_trips_an_odd_but_legal_path(tmp_path):
    folder = tmp_path / "dir with spaces ünï"
    folder.mkdir()
    model = write(folder, "my model.py", TINY_MODEL)
    workload = Workload.from_json(_workload(model=f"{model}:Net", inputs=["2x4"], model_kwargs={}))
    assert Workload.from_json(workload.to_json()) == workload
    assert analyze_workload(workload).totals.params == 4 * 2 + 2
