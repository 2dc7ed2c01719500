"""Run every bench/bench_*.py module (or those named on the command line) and print their report."""
from __future__ import annotations

import importlib
import pkgutil
import sys

from torchbudget import bench


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    for name in names:
        print(f"\n## {name.removeprefix('bench_')}\n", flush=True)
        module = importlib.import_module(f"torchbudget.bench.{name}")
        for line in module.run():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
