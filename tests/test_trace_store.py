"""The on-disk trace store (engine.trace_store) and the trace cache reading and writing through it."""
from __future__ import annotations

import gzip
import os
from dataclasses import replace

import pytest

from torchbudget.engine import trace_store
from torchbudget.engine.api import analyze_workload
from torchbudget.engine.cache import TraceCache
from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.trace_store import TraceStore
from torchbudget.engine.workload import Workload

SMALL = Workload("resnet18", parse_inputs("1x3x64x64"), TraceOptions())


@pytest.fixture(scope="module")
def small_result():
    return analyze_workload(SMALL)


def same_trace(a, b) -> bool:
    return replace(a, trace_seconds=0.0) == replace(b, trace_seconds=0.0)


def _refuse(workload):
    raise AssertionError(f"traced {workload.model} although the store holds it")


def test_a_stored_trace_reads_back_equal(tmp_path, small_result):
    store = TraceStore(tmp_path)
    assert store.load(SMALL) is None and not store.has(SMALL)
    store.save(SMALL, small_result)
    assert store.has(SMALL)
    assert store.load(SMALL) == small_result          # ops and storage events included: plannable as is
    assert store.load(SMALL.with_batch(2)) is None    # another workload is another entry


def test_another_environment_does_not_reuse_a_trace(tmp_path, small_result, monkeypatch):
    store = TraceStore(tmp_path)
    store.save(SMALL, small_result)
    monkeypatch.setattr(trace_store, "environment_fingerprint", lambda: "torch-upgraded")
    assert store.load(SMALL) is None and not store.has(SMALL)


def test_the_fingerprint_follows_the_torch_version_and_the_engine_source(monkeypatch):
    compute = trace_store.environment_fingerprint.__wrapped__
    now = compute()
    monkeypatch.setattr(trace_store, "_version", lambda dist: "9.9.9")
    assert compute() != now
    monkeypatch.undo()
    assert compute() == now
    real = trace_store._version
    for library in ("torch", "torchvision", "transformers", "timm", "peft"):   # each one's code runs in a trace
        monkeypatch.setattr(trace_store, "_version", lambda dist, changed=library, real=real:
                            "9.9.9" if dist == changed else real(dist))
        assert compute() != now, library
    monkeypatch.undo()
    engine_files = sorted(p.name for p in (trace_store.Path(trace_store.__file__).parent).rglob("*.py"))
    assert "trace.py" in engine_files and "recorder.py" in engine_files   # what the hash reads


def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path, small_result):
    store = TraceStore(tmp_path)
    store.save(SMALL, small_result)
    path = store.path_for(SMALL)
    path.write_bytes(gzip.compress(b'{"key": "x", "resu'))
    assert store.load(SMALL) is None
    path.write_bytes(b"not gzip at all")
    assert store.load(SMALL) is None
    cache = TraceCache(store=store)
    assert same_trace(cache.get(SMALL), small_result) and cache.misses == 1   # traced again...
    cache.flush()
    assert same_trace(store.load(SMALL), small_result)                       # ...and written back


def test_user_files_are_never_stored(tmp_path, small_result):
    store = TraceStore(tmp_path)
    from_file = Workload("models/net.py:Net", parse_inputs("1x3x64x64"), TraceOptions())
    store.save(from_file, small_result)
    assert not store.has(from_file) and store.load(from_file) is None
    assert not list(tmp_path.iterdir())


def test_a_second_cache_loads_what_the_first_traced_without_tracing(tmp_path):
    first = TraceCache(store=TraceStore(tmp_path))
    traced = first.get(SMALL)
    first.flush()
    second = TraceCache(analyzer=_refuse, store=TraceStore(tmp_path))
    assert SMALL in second                 # the GUI asks this before choosing the no-trace path
    assert second.get(SMALL) == traced
    assert (second.loaded, second.misses) == (1, 0)
    assert second.get(SMALL) is second.get(SMALL) and second.loaded == 1   # then from memory


def test_the_oldest_entries_are_pruned(tmp_path, small_result):
    store = TraceStore(tmp_path, max_entries=2)
    workloads = [SMALL.with_batch(b) for b in (1, 2, 3)]
    for age, workload in enumerate(workloads):
        store.save(workload, small_result)
        os.utime(store.path_for(workload), (1_000_000 + age, 1_000_000 + age))
    store.save(workloads[2], small_result)   # saving prunes down to max_entries, oldest first
    assert [store.has(w) for w in workloads] == [False, True, True]


def test_an_unwritable_store_only_costs_time(tmp_path, small_result):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder should be")
    store = TraceStore(blocker / "traces")
    store.save(SMALL, small_result)   # no exception: the store only saves time
    assert store.load(SMALL) is None
    assert same_trace(TraceCache(store=store).get(SMALL), small_result)


def test_facts_are_kept_per_environment(tmp_path, monkeypatch):
    store = TraceStore(tmp_path)
    assert store.load_fact("model_names") is None
    store.save_fact("model_names", ["alexnet", "resnet50"])
    assert store.load_fact("model_names") == ["alexnet", "resnet50"]
    monkeypatch.setattr(trace_store, "environment_fingerprint", lambda: "torchvision-upgraded")
    assert store.load_fact("model_names") is None
    store.save_fact("model_names", ["alexnet"])   # the older environment's copy goes
    assert [p.name for p in tmp_path.iterdir()] == ["model_names-torchvision-upgraded.json.gz"]


def test_the_default_folder_follows_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(trace_store.CACHE_DIR_ENV, str(tmp_path / "elsewhere"))
    assert TraceStore().directory == tmp_path / "elsewhere"
    monkeypatch.delenv(trace_store.CACHE_DIR_ENV)
    import platformdirs

    assert TraceStore().directory == trace_store.Path(platformdirs.user_cache_dir("torchbudget")) / "traces"


def test_a_repeated_cli_plan_answers_from_the_store_without_pytorch(tmp_path):
    """The CLI reads and writes the app's trace store: the second plan of a workload imports no PyTorch
    (and --no-store bypasses the store)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = ("import sys\nfrom torchbudget.__main__ import main\ncode = main(sys.argv[1:])\n"
              "print('TORCH', 'torch' in sys.modules)\nsys.exit(code)")
    args = ["plan", "resnet18", "--input", "2x3x64x64", "--mode", "train", "--gpu", "T4"]
    env = dict(os.environ, TORCHBUDGET_CACHE_DIR=str(tmp_path))

    def run(*extra):
        done = subprocess.run([sys.executable, "-c", script, *args, *extra], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run()
    assert "TORCH True" in first
    second = run()
    assert "TORCH False" in second
    assert second.replace("TORCH False", "") == first.replace("TORCH True", "")
    assert "TORCH True" in run("--no-store")
