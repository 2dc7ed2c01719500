"""Peer counters (thop, ptflops, torchinfo, fvcore, FlopCounterMode) behind one interface, run in a
fresh subprocess by bench_engine (``python -m torchbudget.bench.peers PEER MODEL SHAPE``: prints one JSON line),
plus ``python -m torchbudget.bench.peers reconcile`` (per-layer-type numbers) and ``python -m torchbudget.bench.peers claims``
(the verified peer errors) behind docs/conventions.md."""
from __future__ import annotations

import collections
import contextlib
import io
import json
import resource
import sys
import time
import warnings

import torch
import torchvision

warnings.filterwarnings("ignore")


def build(name: str, device: str = "cpu"):
    with torch.device(device):
        return torchvision.models.get_model(name, weights=None).eval()


def count_thop(model, x):
    import thop
    with contextlib.redirect_stdout(io.StringIO()):
        macs, _ = thop.profile(model, (x,), verbose=False)
    return int(macs)


def count_ptflops(model, x):
    from ptflops import get_model_complexity_info
    macs, _ = get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False,
                                        input_constructor=lambda _: x, backend="pytorch")
    return int(macs)


def count_torchinfo(model, x):
    import torchinfo
    return int(torchinfo.summary(model, input_data=x, verbose=0).total_mult_adds)


def count_fvcore(model, x):
    from fvcore.nn import FlopCountAnalysis
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


def count_flop_counter_mode(model, x):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as mode, torch.no_grad():
        model(x)
    return int(mode.get_total_flops()) // 2  # its FLOPs are 2 × MACs


def count_ours(model, x):
    from torchbudget.engine.api import analyze
    shape = "x".join(str(d) for d in x.shape)
    return analyze(model, shape + (":int64" if x.dtype == torch.long else "")).totals.macs


PEERS = {"ours": count_ours, "thop": count_thop, "ptflops": count_ptflops, "torchinfo": count_torchinfo, "fvcore": count_fvcore,
         "FlopCounterMode": count_flop_counter_mode}


def run_peer(peer: str, model_name: str, shape: str, warm: bool = True) -> dict:
    """Build on CPU (peers need real tensors; ours and FlopCounterMode run on meta), count, time.
    ``warm``: time a second call (imports, first-call caches excluded); else time the first, build included."""
    dims = tuple(int(d) for d in shape.split("x"))
    device = "meta" if peer in ("ours", "FlopCounterMode") else "cpu"
    started = time.perf_counter()
    if model_name == "llm7b":
        from torchbudget.bench.llm7b import build_on_meta
        model, x = build_on_meta(), torch.zeros(dims, dtype=torch.long, device="meta")
    else:
        model, x = build(model_name, device), torch.randn(dims, device=device)
    if warm:
        PEERS[peer](model, x)
        started = time.perf_counter()
    macs = PEERS[peer](model, x)
    seconds = time.perf_counter() - started
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peer": peer, "macs": macs, "seconds": seconds, "peak_rss_mib": peak_rss_mib}


def _by_module_type(model, per_module: dict) -> dict:
    totals = collections.Counter()
    for module, value in per_module.items():
        totals[type(module).__name__] += value
    return dict(totals)


def reconcile(model_name: str) -> None:
    """Per-layer-type MACs of every peer and of ours on one model at 1×3×224²."""
    from torchbudget.engine.api import analyze
    model, x = build(model_name), torch.randn(1, 3, 224, 224)
    result = analyze(model_name, "1x3x224x224")
    ours = collections.Counter()
    for op in result.ops:
        ours[op.op.rsplit(".", 1)[0]] += op.macs if op.macs else op.flops
    print(f"### {model_name}: ours MACs {result.totals.macs:,} FLOPs {result.totals.flops:,}")
    print("ours (MACs for matmul-like ops, FLOPs otherwise):", {k: v for k, v in ours.items() if v})
    print("ours thop preset:", f"{analyze(model_name, '1x3x224x224', convention='thop').totals.macs:,}")
    import thop
    with contextlib.redirect_stdout(io.StringIO()):
        total, _ = thop.profile(model, (x,), verbose=False)
    per = {m: int(m.total_ops.item()) for m in model.modules() if hasattr(m, "total_ops") and not list(m.children())}
    print(f"thop {thop.__version__ if hasattr(thop, '__version__') else ''}: {int(total):,}", _by_module_type(model, per))
    model = build(model_name)  # thop leaves buffers behind; start clean
    from ptflops.pytorch_engine import add_flops_counting_methods, patch_functional, unpatch_functional
    functional = []
    counted = add_flops_counting_methods(model)
    counted.start_flops_count(ost=io.StringIO(), verbose=False, ignore_list=[])
    patch_functional(functional)
    try:
        counted(x)
        per = {m: m.__flops__ for m in model.modules() if hasattr(m, "__flops__") and not list(m.children())}
    finally:
        unpatch_functional()
        counted.stop_flops_count()
    print(f"ptflops: modules {_by_module_type(model, per)}, functional F.* calls {sum(functional):,}")
    print(f"ptflops total {count_ptflops(build(model_name), x):,}")
    print(f"torchinfo total_mult_adds {count_torchinfo(build(model_name), x):,}")
    from fvcore.nn import FlopCountAnalysis
    analysis = FlopCountAnalysis(build(model_name), x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    print(f"fvcore {analysis.total():,}", dict(analysis.by_operator()), "unsupported:", dict(analysis.unsupported_ops()))
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as mode:
        build(model_name)(x)
    print(f"FlopCounterMode FLOPs {mode.get_total_flops():,}",
          {str(k): v for k, v in mode.get_flop_counts()["Global"].items()})


def claims() -> None:
    """The peer errors named in docs/conventions.md, each checked by running the peer."""
    from torch import nn

    from torchbudget.engine.api import analyze

    def conv_t():
        return nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, bias=False)

    x = torch.randn(1, 16, 32, 32)
    print("ConvTranspose2d: correct", 32 * 32 * 16 * 8 * 16, {name: f(conv_t(), x) for name, f in PEERS.items()
                                                              if name != "ours"},
          "ours", analyze(conv_t(), (x,)).totals.macs)
    shared = nn.Linear(64, 64)

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = shared

        def forward(self, x):
            return self.fc(x)

    import torchinfo
    model = nn.Sequential(Parent(), Parent())
    print("shared Linear: true params", sum(p.numel() for p in model.parameters()),
          "torchinfo", torchinfo.summary(model, input_data=torch.randn(1, 64), verbose=0).total_params,
          "ours", analyze(model, (torch.randn(1, 64),)).totals.params)

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 32)

        def forward(self, x):
            return torch.nn.functional.relu(self.fc(x)) @ self.fc.weight

    for batch in (1, 4):
        print(f"ptflops batch {batch}:", count_ptflops(Mixed(), torch.randn(batch, 32)),
              "ours", analyze(Mixed(), (torch.randn(batch, 32),)).totals.macs)


if __name__ == "__main__":
    if sys.argv[1] == "claims":
        claims()
    elif sys.argv[1] == "reconcile":
        for name in sys.argv[2:] or ["alexnet", "resnet50"]:
            reconcile(name)
    else:
        print(json.dumps(run_peer(sys.argv[1], sys.argv[2], sys.argv[3], warm="--cold" not in sys.argv)))
