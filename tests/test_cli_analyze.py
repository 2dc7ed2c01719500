"""``main.py analyze``: the per-layer table, JSON output, and one-line errors (tracebacks only with --debug)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchbudget.cli import run_cli
from torchbudget.engine.errors import UnknownModelError

ROOT = Path(__file__).resolve().parent.parent
FUSIONNET = ROOT / "tests" / "models" / "fusionnet.py"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_cli(["analyze", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_table_with_depth_and_totals(capsys):
    code, out, err = _run(capsys, "alexnet", "--depth", "1")
    assert code == 0 and err == ""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Module"))
    for column in ("Type", "Output shape", "Params", "MACs", "FLOPs", "Activations"):
        assert column in lines[header]
    rows = lines[header + 2: lines.index("", header)]
    assert [row.split()[0] for row in rows] == ["alexnet", "features", "avgpool", "classifier"]
    assert rows[1].startswith("  features") and "1x256x6x6" in rows[1]  # indented by depth
    assert "61,100,840" in out and "714,188,480" in out and "714.19 M" in out
    assert "MiB" in out  # byte sizes carry their unit


def test_every_depth_and_layer_values_for_a_user_file(capsys, tmp_path):
    path = _write(tmp_path, """
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self, width=8):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
                self.head = nn.Linear(width * 4 * 4, 5)
            def forward(self, x):
                return self.head(self.body(x).flatten(1))
    """)
    code, out, _ = _run(capsys, f"{path}:Net", "--input", "2x3x4x4", "--kwargs", '{"width": 16}')
    assert code == 0
    conv_row = next(line for line in out.splitlines() if line.strip().startswith("0 "))
    conv_macs = 2 * 16 * 4 * 4 * 3 * 9  # batch · Cout · H · W · Cin · k²
    assert conv_row.split()[:4] == ["0", "Conv2d", "2x16x4x4", f"{3 * 9 * 16 + 16:,}"]
    assert f"{conv_macs / 1e3:.2f} K" in conv_row
    assert "    0 " in conv_row[:6]  # depth 2: four spaces of indentation
    assert "no uncounted ops" in out


def test_json_output_is_the_whole_result(capsys):
    code, out, _ = _run(capsys, "resnet18", "--input", "2x3x64x64", "--json", "--kwargs", '{"num_classes": 10}')
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "resnet18" and data["inputs"][0]["shape"] == [2, 3, 64, 64]
    params_resnet18_10 = 11_689_512 - 512 * 1000 - 1000 + 512 * 10 + 10  # torchvision's count, new head
    assert data["totals"]["params"] == params_resnet18_10
    fc = next(layer for layer in data["layers"] if layer["path"] == "fc")
    assert fc["output_shapes"] == [[2, 10]] and fc["macs"] == 2 * 512 * 10
    assert "ops" not in data and data["uncounted_ops"] == []
    code, out, _ = _run(capsys, "resnet18", "--input", "1x3x32x32", "--json", "--ops")
    assert len(json.loads(out)["ops"]) > 0


def test_list_names(capsys):
    code, out, _ = _run(capsys, "--list")
    assert code == 0 and {"resnet50", "raft_small", "deeplabv3_resnet50"} <= set(out.split())


@pytest.mark.parametrize("argv, fragments", [
    (["resnt18"], ["unknown model 'resnt18'", "resnet18"]),
    (["resnet18", "--input", "1x4x224x224"], ["conv1", "1x4x224x224", "3 input channels"]),
    (["resnet18", "--input", "1x3xfoo"], ["malformed input shape '1x3xfoo'"]),
    (["resnet18", "--kwargs", "{num_classes: 10}"], ["--kwargs is not valid JSON"]),
    (["resnet18", "--kwargs", '{"colour": 1}'], ["building resnet18 failed", "colour"]),
    (["resnet18", "--depth", "-1"], ["--depth must be 0 or more"]),
    ([], ["name a model"]),
])
def test_errors_are_one_line(capsys, argv, fragments):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_user_file_errors(capsys, tmp_path):
    broken = _write(tmp_path, "import torch.nn as nn\nclass Net(nn.Module:\n    pass\n")
    code, _, err = _run(capsys, f"{broken}:Net")
    assert code == 2 and "net.py:2" in err and "SyntaxError" in err
    raising = _write(tmp_path, "def make():\n    raise RuntimeError('no GPU here')\n")
    code, _, err = _run(capsys, f"{raising}:make")
    assert code == 2 and "net.py:2" in err and "RuntimeError: no GPU here" in err and err.count("\n") == 1


def test_debug_shows_the_exception(capsys):
    with pytest.raises(UnknownModelError):
        run_cli(["analyze", "resnt18", "--debug"])


def test_real_subprocess():
    ok = subprocess.run([sys.executable, "main.py", "analyze", f"{FUSIONNET}:FusionNet", "--input", "1x1x32x32",
                         "--kwargs", '{"input_nc": 1, "output_nc": 1}', "--json"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert next(layer for layer in data["layers"] if layer["path"] == "down_1")["params"] == 37_632
    bad = subprocess.run([sys.executable, "main.py", "analyze", "resnet18", "--input", "1x4x64x64"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
