"""The examples in README.md and docs/*.md, run against what they show (tests/test_docs_examples.py).

Console blocks (a fence marked ```console):

* a line ``$ python main.py ARGS`` is a command (``$ torchbudget ARGS`` too); the lines after it, up to
  the next ``$`` line or the end of the block, are its output: stdout, then stderr. The exit status must
  be 2 when the output has a line starting with ``error:`` and 0 otherwise.
* ``# comment`` at the end of a command is ignored; ``| jq [-c] [-r] EXPR`` filters the command's JSON
  output with a path (``.``, ``.totals.macs``, ``.layers[3]``, ``.rows[-1]["name"]``), printed as jq
  prints it (``-c`` compact, ``-r`` strings unquoted). No other pipes, no jq binary.
* an output line that is exactly ``...`` stands for any number of lines (to cut a long table short).
* ``MASKS`` hides what differs from run to run, in the shown and the actual text alike: timings only.
  Every count, byte figure and latency must match exactly; trailing spaces of a line are ignored.
* a command shown without output only has to run (exit 0): such lines illustrate syntax. Words in
  square brackets (``[--json]``) are optional parts of that syntax and are left out when it runs.
* a command that needs hardware CI has not (``needs_local_hardware``: the ``validate`` subcommand,
  ``--local``, a ``--gpu``/``--gpus`` value ``local``) is skipped, whatever it shows.

Python blocks (```python) are compiled and run, each in a fresh namespace from the repository root.

``<!-- docs-example: skip REASON -->`` on the line before a fence (blank lines may come between)
skips that whole block; the reason is required and shows in the test report.

Commands run in this process through ``torchbudget.cli.run_cli`` from the repository root, so the whole
set costs a few seconds. After a deliberate change of output,

    python -m tests.docs_examples --update

rewrites every console block that no longer matches with the current output (a ``...`` cut keeps as many
leading and trailing lines as it had; lines whose masked text is unchanged, such as a different timing,
are kept as written), so ``git diff`` shows what changed. Without ``--update`` it checks and prints diffs.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What may differ between two runs of the same command. Timings only: keep this list tiny.
MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\btraced in \d+(?:\.\d+)? s\b"), "traced in <seconds> s"),   # analyze's header line
)

ELLIPSIS = "..."
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-example:\s*(?P<verb>\S+)\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
PROGRAMS = (("python", "main.py"), ("torchbudget",), ("python", "-m", "torchbudget"))


class ExampleError(Exception):
    """An example the harness cannot run as written (unknown program, unsupported pipe or jq filter)."""


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------- parsing

@dataclass
class Block:
    path: Path
    lang: str
    fence_line: int          # 1-based line number of the opening fence
    lines: list[str]         # the block's content
    skip: str | None         # reason of a skip directive before the fence

    @property
    def where(self) -> str:
        return f"{rel(self.path)}:{self.fence_line}"

    @property
    def source(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class Example:
    block: Block
    line: int                # 1-based line number of the ``$`` line
    command: str             # the text after ``$ ``
    expected: list[str]      # shown output, trailing blank lines left out

    @property
    def where(self) -> str:
        return f"{rel(self.block.path)}:{self.line}"

    @property
    def output_span(self) -> tuple[int, int]:
        """0-based [start, end) indices of the shown output in the file's lines."""
        return self.line, self.line + len(self.expected)


def parse_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        blocks.append(Block(path, opening["info"].lower(), i + 1, lines[i + 1:end], _directive_before(lines, i, path)))
        i = end + 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def _directive_before(lines: list[str], fence_index: int, path: Path) -> str | None:
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0 or not (match := DIRECTIVE.match(lines[j])):
        return None
    if match["verb"] != "skip" or not match["reason"]:
        raise ExampleError(f"{rel(path)}:{j + 1}: write <!-- docs-example: skip REASON --> (a reason is required)")
    return match["reason"]


def console_examples(block: Block) -> list[Example]:
    examples: list[Example] = []
    for offset, text in enumerate(block.lines):
        if text.startswith("$ "):
            examples.append(Example(block, block.fence_line + 1 + offset, text[2:].strip(), []))
        elif examples:
            examples[-1].expected.append(text)
        elif text.strip():
            raise ExampleError(f"{rel(block.path)}:{block.fence_line + 1 + offset}: console output before any '$ ' command")
    for example in examples:
        while example.expected and not example.expected[-1].strip():
            example.expected.pop()
    return examples


def blocks(lang: str, files: list[Path] | None = None) -> list[Block]:
    return [b for path in (files or doc_files()) for b in parse_blocks(path) if b.lang == lang]


def all_console_examples(files: list[Path] | None = None) -> list[Example]:
    return [e for b in blocks("console", files) for e in console_examples(b)]


# --------------------------------------------------------------------------------------------- commands

@dataclass
class Command:
    argv: list[str]                 # the CLI's arguments, optional [words] left out
    jq: tuple[list[str], str] | None  # (options, filter) of a ``| jq`` stage
    needs_hardware: str | None      # why CI cannot run it


def parse_command(text: str) -> Command:
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ExampleError(f"cannot split {text!r}: {exc}") from None
    stages: list[list[str]] = [[]]
    for token in tokens:
        if token == "|":
            stages.append([])
        else:
            stages[-1].append(token)
    words = stages[0]
    for program in PROGRAMS:
        if tuple(words[:len(program)]) == program:
            words = words[len(program):]
            break
    else:
        raise ExampleError(f"not a TorchBudget command: {text!r} (expected `python main.py ...`)")
    jq = None
    for stage in stages[1:]:
        if jq is not None or not stage or stage[0] != "jq":
            raise ExampleError(f"only one `| jq FILTER` may follow a command: {text!r}")
        options = [w for w in stage[1:] if w.startswith("-")]
        rest = [w for w in stage[1:] if not w.startswith("-")]
        if len(rest) != 1 or set(options) - {"-c", "-r"}:
            raise ExampleError(f"supported: `jq [-c] [-r] PATH`, got {' '.join(stage)!r}")
        jq = (options, rest[0])
    optional = [w for w in words if w.startswith("[") and w.endswith("]")]
    argv = [w for w in words if w not in optional]
    return Command(argv, jq, needs_local_hardware(argv + [w[1:-1] for w in optional]))


def needs_local_hardware(words: list[str]) -> str | None:
    """Why this command cannot run on a machine without an NVIDIA GPU and driver, or None.
    The rule: ``validate`` (measures on CUDA), ``--local`` (lists the machine's GPUs through NVML), and a
    ``--gpu``/``--gpus`` value naming ``local``."""
    if words[:1] == ["validate"]:
        return "validate measures on a CUDA GPU"
    if "--local" in words:
        return "--local reads this machine's GPUs through NVML"
    for i, word in enumerate(words):
        for flag in ("--gpu", "--gpus"):
            value = words[i + 1] if word == flag and i + 1 < len(words) else (
                word[len(flag) + 1:] if word.startswith(flag + "=") else None)
            if value is not None and "local" in (v.strip().lower() for v in value.split(",")):
                return f"{flag} local needs this machine's GPU"
    return None


_JQ_STEP = re.compile(r'\.(?P<key>[A-Za-z_][A-Za-z0-9_]*)|\.?\[(?P<index>-?\d+)\]|\.?\["(?P<qkey>[^"\\]*)"\]')


def jq(expression: str, value):
    """jq's path subset: ``.``, ``.a.b``, ``.a[0]``, ``.[-1]``, ``.["a b"]``; a missing key or index is null."""
    if expression == ".":
        return value
    if not expression.startswith("."):
        raise ExampleError(f"jq filter {expression!r}: only paths starting with '.' are supported")
    pos = 0
    while pos < len(expression):
        step = _JQ_STEP.match(expression, pos)
        if not step:
            raise ExampleError(f"jq filter {expression!r}: unsupported at {expression[pos:]!r}")
        pos = step.end()
        if step["index"] is not None:
            if value is not None and not isinstance(value, list):
                raise ExampleError(f"jq filter {expression!r}: cannot index {type(value).__name__} with a number")
            index = int(step["index"])
            value = value[index] if value is not None and -len(value) <= index < len(value) else None
        else:
            if value is not None and not isinstance(value, dict):
                raise ExampleError(f"jq filter {expression!r}: cannot index {type(value).__name__} with a key")
            value = None if value is None else value.get(step["key"] if step["key"] is not None else step["qkey"])
    return value


def jq_format(value, options: list[str]) -> str:
    if "-r" in options and isinstance(value, str):
        return value
    if "-c" in options:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=False, indent=2)


@dataclass
class Outcome:
    status: int
    text: str          # what the user sees: stdout (through jq if piped), then stderr


@contextlib.contextmanager
def _in_directory(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_command(command: Command) -> Outcome:
    """Runs the CLI in this process, from the repository root, with stdout and stderr captured."""
    from torchbudget.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    with _in_directory(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = run_cli(list(command.argv))
        except SystemExit as exc:   # argparse's usage errors
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    stdout = out.getvalue()
    if command.jq is not None and status == 0:
        options, expression = command.jq
        try:
            document = json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise ExampleError(f"`| jq` needs JSON output (add --json): {exc}") from None
        stdout = jq_format(jq(expression, document), options) + "\n"
    return Outcome(status, stdout + err.getvalue())


# ------------------------------------------------------------------------------------------- comparing

def mask(line: str) -> str:
    line = line.rstrip()
    for pattern, replacement in MASKS:
        line = pattern.sub(replacement, line)
    return line


def output_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def expected_status(expected: list[str]) -> int:
    return 2 if any(line.startswith("error:") for line in expected) else 0


def matches(expected: list[str], actual: list[str]) -> bool:
    """Masked line-by-line equality, where a ``...`` line of ``expected`` matches any run of lines."""
    shown = [mask(line) for line in expected]
    got = [mask(line) for line in actual]
    if ELLIPSIS not in shown:
        return shown == got
    segments: list[list[str]] = [[]]
    for line in shown:
        if line == ELLIPSIS:
            segments.append([])
        else:
            segments[-1].append(line)
    head, *middle, tail = segments
    start, end = len(head), len(got) - len(tail)
    if end < start or got[:start] != head or got[end:] != tail:
        return False
    for segment in middle:
        for at in range(start, end - len(segment) + 1):
            if got[at:at + len(segment)] == segment:
                start = at + len(segment)
                break
        else:
            return False
    return True


def rendered(expected: list[str], actual: list[str]) -> list[str]:
    """What the docs should show for ``actual``: cut at ``...`` as ``expected`` is (same number of leading
    and trailing lines), and expected lines kept verbatim where only a masked figure (a timing) differs."""
    new = list(actual)
    if ELLIPSIS in expected:
        first = expected.index(ELLIPSIS)
        after = len(expected) - 1 - max(i for i, line in enumerate(expected) if line == ELLIPSIS)
        if len(actual) >= first + after:
            new = actual[:first] + [ELLIPSIS] + actual[len(actual) - after:]
    matcher = difflib.SequenceMatcher(None, [mask(x) for x in expected], [mask(x) for x in new], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            new[j1:j2] = expected[i1:i2]
    return new


@dataclass
class Check:
    example: Example
    command: Command
    outcome: Outcome

    @property
    def actual(self) -> list[str]:
        return output_lines(self.outcome.text)

    @property
    def status_ok(self) -> bool:
        return self.outcome.status == expected_status(self.example.expected)

    @property
    def output_ok(self) -> bool:
        return not self.example.expected or matches(self.example.expected, self.actual)

    @property
    def ok(self) -> bool:
        return self.status_ok and self.output_ok

    def report(self) -> str:
        example = self.example
        lines = [f"{example.where}: $ {example.command}"]
        if not self.status_ok:
            lines.append(f"exit status {self.outcome.status}, expected {expected_status(example.expected)}")
        if not example.expected:
            lines.append("(no output shown; it must run with exit status 0)")
            lines += [f"  {line}" for line in self.actual[-20:]]
        elif not self.output_ok:
            lines += difflib.unified_diff(example.expected, rendered(example.expected, self.actual),
                                          f"{example.where} (shown)", "actual", lineterm="")
        return "\n".join(lines)


def check(example: Example) -> Check:
    command = parse_command(example.command)
    return Check(example, command, run_command(command))


# ---------------------------------------------------------------------------------------- python blocks

def compile_block(block: Block):
    """Compiled with the file's own line numbers, so a traceback points into the document."""
    return compile("\n" * block.fence_line + block.source, str(block.path), "exec")


def run_python_block(block: Block) -> None:
    code = compile_block(block)
    with _in_directory(ROOT):
        exec(code, {"__name__": "__docs_example__"})


# ---------------------------------------------------------------------------------------- command line

def update(files: list[Path], out=sys.stdout) -> int:
    """Rewrites the shown output of every console example that no longer matches. Returns the number of
    examples that could not be checked (errors while running them)."""
    problems = 0
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        edits: list[tuple[tuple[int, int], list[str]]] = []
        for block in parse_blocks(path):
            if block.lang != "console" or block.skip:
                continue
            for example in console_examples(block):
                if not example.expected:
                    continue    # a syntax line: nothing shown, nothing to refresh
                try:
                    result = check(example)
                except Exception as exc:  # noqa: BLE001 - report and keep the docs as they are
                    print(f"{example.where}: not updated: {type(exc).__name__}: {exc}", file=out)
                    problems += 1
                    continue
                if result.command.needs_hardware or result.ok:
                    continue
                if not result.status_ok:
                    print(f"{example.where}: exit status is now {result.outcome.status}", file=out)
                new = rendered(example.expected, result.actual)
                print(result.report(), file=out)
                edits.append((example.output_span, [line + "\n" for line in new]))
        for (start, end), new_lines in reversed(edits):
            lines[start:end] = new_lines
        if edits:
            path.write_text("".join(lines), encoding="utf-8")
            print(f"{rel(path)}: {len(edits)} example(s) updated", file=out)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.docs_examples", description=__doc__.split("\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite stale console output in place")
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md, docs/*.md)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # nothing may download
    files = [path.resolve() for path in args.files] or doc_files()
    if args.update:
        return 1 if update(files) else 0
    failures = 0
    for example in all_console_examples(files):
        if example.block.skip:
            print(f"{example.where}: skipped ({example.block.skip})")
            continue
        command = parse_command(example.command)
        if command.needs_hardware:
            print(f"{example.where}: skipped ({command.needs_hardware})")
            continue
        result = check(example)
        if not result.ok:
            failures += 1
            print(result.report())
    print(f"{failures} failing console example(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
