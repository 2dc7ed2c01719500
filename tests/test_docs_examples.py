"""Every console example of README.md and docs/*.md runs and prints what it shows; every Python block
compiles and runs. The rules (masks, `...`, the skip directive, `--update`) are in tests/docs_examples.py."""
from __future__ import annotations

import pytest

from tests import docs_examples as docs

CONSOLE = docs.all_console_examples()
PYTHON = docs.blocks("python")


def test_docs_have_examples():
    assert any(e.block.path.name == "README.md" for e in CONSOLE)
    assert any(e.block.path.name == "cli.md" for e in CONSOLE)
    assert any(b.path.name == "README.md" for b in PYTHON)


@pytest.mark.parametrize("example", CONSOLE, ids=[e.where for e in CONSOLE])
def test_console_example(example: docs.Example):
    if example.block.skip:
        pytest.skip(f"docs-example directive: {example.block.skip}")
    command = docs.parse_command(example.command)
    if command.needs_hardware:
        pytest.skip(command.needs_hardware)
    result = docs.Check(example, command, docs.run_command(command))
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_python_block_compiles(block: docs.Block):
    if block.skip:
        pytest.skip(f"docs-example directive: {block.skip}")
    docs.compile_block(block)


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_python_block_runs(block: docs.Block):
    if block.skip:
        pytest.skip(f"docs-example directive: {block.skip}")
    docs.run_python_block(block)


# ---- the harness itself, on small made-up documents ----------------------------------------------------

def test_masks_hide_timings_only():
    assert docs.mask("alexnet  (convention default; traced in 0.09 s)") == docs.mask("alexnet  (convention default; traced in 12.5 s)")
    assert docs.mask("latency: lower bound 16.82 ms") != docs.mask("latency: lower bound 16.83 ms")
    assert docs.mask("throughput: 1,204.1 samples/s") != docs.mask("throughput: 1,204.2 samples/s")


def test_ellipsis_matches_any_number_of_lines():
    assert docs.matches(["a", "..."], ["a"])
    assert docs.matches(["a", "..."], ["a", "b", "c"])
    assert docs.matches(["a", "...", "z"], ["a", "b", "z"])
    assert docs.matches(["a", "...", "m", "...", "z"], ["a", "b", "m", "n", "z"])
    assert not docs.matches(["a", "...", "z"], ["a", "b"])
    assert not docs.matches(["b", "..."], ["a", "b"])
    assert not docs.matches(["a"], ["a", "b"])


def test_rendered_keeps_the_cut_and_unchanged_timings():
    expected = ["x  (traced in 0.09 s)", "", "row 1", "row 2", "..."]
    actual = ["x  (traced in 0.31 s)", "", "row 1", "row 2 changed", "row 3", "row 4"]
    assert docs.rendered(expected, actual) == ["x  (traced in 0.09 s)", "", "row 1", "row 2 changed", "..."]
    assert docs.rendered(["a", "...", "z"], ["a", "b", "c", "y"]) == ["a", "...", "y"]


def test_commands():
    command = docs.parse_command("python main.py analyze alexnet --convention thop --json | jq .totals.macs   # the seed")
    assert command.argv == ["analyze", "alexnet", "--convention", "thop", "--json"]
    assert command.jq == ([], ".totals.macs") and command.needs_hardware is None
    command = docs.parse_command("""python main.py analyze m.py:Net --kwargs '{"a": 1}'  # x | y""")
    assert command.argv == ["analyze", "m.py:Net", "--kwargs", '{"a": 1}'] and command.jq is None
    assert docs.parse_command("python main.py gpus [--local] [--json]").needs_hardware
    assert docs.parse_command("python main.py validate resnet50 --mode train").needs_hardware
    assert docs.parse_command('python main.py plan resnet50 --gpu local').needs_hardware
    assert docs.parse_command('python main.py sweep resnet50 --gpus "H100 SXM,local"').needs_hardware
    assert docs.parse_command('python main.py plan resnet50 --gpu "RTX 4090"').needs_hardware is None
    assert docs.parse_command("python main.py gpus [--json]").argv == ["gpus"]
    for unsupported in ("make test", "python main.py analyze x --json | head", "python main.py x | jq 'map(.a)'"):
        with pytest.raises(docs.ExampleError):
            command = docs.parse_command(unsupported)
            docs.jq(command.jq[1], {})


def test_jq_paths():
    document = {"totals": {"macs": 5}, "rows": [{"name": "a"}, {"name": "b c"}]}
    assert docs.jq(".", document) is document
    assert docs.jq(".totals.macs", document) == 5
    assert docs.jq(".rows[-1].name", document) == "b c"
    assert docs.jq('.rows[0]["name"]', document) == "a"
    assert docs.jq(".missing.deeper", document) is None
    assert docs.jq(".rows[7]", document) is None
    assert docs.jq_format({"a": [1]}, ["-c"]) == '{"a":[1]}'
    assert docs.jq_format("b c", ["-r"]) == "b c"
    assert docs.jq_format("b c", []) == '"b c"'


def test_blocks_directive_and_update(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Intro\n\n"
        "```console\n"
        "$ python main.py analyze resnet5\n"
        "error: something old\n"
        "$ python main.py sweep resnet50 --batch 1   # syntax only\n"
        "```\n\n"
        "<!-- docs-example: skip waits for a fix -->\n\n"
        "```console\n"
        "$ python main.py analyze nothing_like_this\n"
        "stale\n"
        "```\n",
        encoding="utf-8")
    first, second = docs.parse_blocks(page)
    assert (first.lang, first.fence_line, first.skip) == ("console", 3, None)
    assert second.skip == "waits for a fix"
    error, syntax = docs.console_examples(first)
    assert (error.line, error.expected, syntax.expected) == (4, ["error: something old"], [])
    assert docs.expected_status(error.expected) == 2
    docs.update([page], out=open(tmp_path / "log", "w"))
    text = page.read_text(encoding="utf-8")
    assert "error: unknown model 'resnet5'; did you mean" in text     # refreshed
    assert "$ python main.py sweep resnet50 --batch 1   # syntax only\n```" in text   # no output added
    assert "stale" in text                                            # skipped block untouched
    assert docs.check(docs.console_examples(docs.parse_blocks(page)[0])[0]).ok
