"""engine.vocab is the one owner of the workload's vocabulary: the CLI, the GUI and the docs derive from it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from torchbudget.cli import build_parser
from torchbudget.engine import vocab
from torchbudget.engine.results import TraceOptions
from torchbudget.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def test_docs_show_the_vocabulary_tables_generated_from_the_code():
    assert vocab.markdown_tables() in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("terms", [vocab.PRECISION_NAMES, vocab.OPTIMIZER_IMPL_NAMES, vocab.ATTENTION_NAMES])
def test_each_vocabulary_list_is_spelled_in_one_module_only(terms):
    """A value list written out as literals (two or more of its names in one tuple/list/dict) appears in
    engine/vocab.py and nowhere else in the product code."""
    from torchbudget.hardware.spec import PEAK_DTYPES   # GPU peak keys ("fp16", "tf32"): another vocabulary

    pattern = re.compile("|".join(re.escape(f'"{t}"') for t in terms if t != "auto" and t not in PEAK_DTYPES))
    owners = []
    for room in ("engine", "hardware", "gui", "cli"):
        for path in (ROOT / room).rglob("*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if len(pattern.findall(line)) >= 2:
                    owners.append(path.relative_to(ROOT).as_posix())
    assert set(owners) <= {"engine/vocab.py", "engine/target/sdpa.py"} and "engine/vocab.py" in owners


def test_cli_choices_come_from_the_vocabulary():
    parser = build_parser()
    plan = parser._subparsers._group_actions[0].choices["plan"]
    choices = {a.dest: tuple(a.choices) for a in plan._actions if a.choices}
    assert choices["precision"] == vocab.PRECISION_NAMES
    assert choices["optimizer_impl"] == vocab.OPTIMIZER_IMPL_NAMES
    assert choices["attention"] == vocab.ATTENTION_NAMES
    assert choices["mode"] == vocab.MODE_NAMES


@pytest.mark.parametrize("spelling, canonical", [("bfloat16", "bf16"), (" FP16-AMP ", "fp16-amp"), ("half", "fp16")])
def test_spellings_normalise_in_one_place(spelling, canonical):
    assert TraceOptions(precision=spelling).precision == canonical


@pytest.mark.parametrize("field, value", [("mode", "fly"), ("precision", "fp8"), ("optimizer", "lion"),
                                          ("optimizer_impl", "turbo"), ("attention", "sparse"), ("target", "sm3")])
def test_a_bogus_value_is_an_error_naming_its_field(field, value):
    with pytest.raises(UserError) as info:
        TraceOptions(**{field: value})
    assert info.value.field == field


def test_inference_carries_no_training_options():
    options = TraceOptions(mode="infer", optimizer="sgd", optimizer_impl="fused", checkpointing=True)
    assert (options.optimizer, options.optimizer_impl, options.checkpointing) == (None, "auto", False)


def test_input_kinds():
    from torchbudget.engine.inputs import parse_input

    assert parse_input("8x3x224x224").kind is vocab.InputKind.IMAGE
    assert parse_input("8x128:int64").kind is vocab.InputKind.TOKENS
    assert parse_input("8x16").kind is vocab.InputKind.GENERIC
