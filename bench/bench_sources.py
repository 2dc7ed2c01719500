"""Model construction on meta: how long ``load_model`` takes (target: resnet50 well under 0.1 s),
against torchvision's own real CPU construction for scale."""
from __future__ import annotations

import resource
import statistics
import time

import torchvision.models as tvm

from torchbudget.engine.sources import list_model_names, load_model

CASES = [  # (model, target seconds for our meta construction or None)
    ("resnet50", 0.1),
    ("vit_h_14", None),
    ("regnet_y_128gf", None),
    ("efficientnet_b7", None),
    ("fasterrcnn_resnet50_fpn", None),
]
REPEATS = 5


def _median_seconds(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up: imports and first-call caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run() -> list[str]:
    lines = ["| model | params | load_model on meta (median of 5) | torchvision real CPU build (1 run) | target |",
             "|---|---:|---:|---:|---|"]
    for name, target in CASES:
        meta_s = _median_seconds(lambda: load_model(name))
        params = sum(p.numel() for p in load_model(name).module.parameters())
        start = time.perf_counter()
        kwargs = {"weights_backbone": None} if "rcnn" in name else {}
        tvm.get_model(name, weights=None, **kwargs)
        real_s = time.perf_counter() - start
        verdict = "" if target is None else (f"< {target} s: {'met' if meta_s < target else 'MISSED'}")
        lines.append(f"| {name} | {params:,} | {meta_s * 1e3:.1f} ms | {real_s * 1e3:.0f} ms | {verdict} |")
    names_s = _median_seconds(list_model_names)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"list_model_names(): {len(list_model_names())} names in {names_s * 1e3:.2f} ms (cached)",
              f"peak RSS of this benchmark process (includes the real CPU builds): {peak_mib:.0f} MiB"]
    return lines
