"""gui.prefetch: a first launch's traces made in a second process and handed over through the trace store."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from torchbudget.engine.api import analyze_workload
from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.trace_store import TraceStore
from torchbudget.engine.workload import Workload
from torchbudget.gui.prefetch import Prefetch, planned

SMALL = Workload("resnet18", parse_inputs("4x3x64x64"), TraceOptions())


def _refuse(workload):
    raise AssertionError(f"{workload.model} at batch {workload.batch_size} was traced in this process")


def test_the_plan_is_the_workload_then_its_batch_anchors():
    assert [w.batch_size for w in planned(SMALL)] == [4, 1, 2]
    assert [w.batch_size for w in planned(SMALL.with_batch(2))] == [2, 1]
    assert [w.batch_size for w in planned(SMALL.with_batch(1))] == [1, 2]


def test_the_second_process_traces_and_this_one_only_loads(tmp_path):
    store = TraceStore(tmp_path)
    prefetch = Prefetch(store)
    prefetch.request(SMALL)
    analyze = prefetch.analyzer(_refuse)
    for workload in planned(SMALL):   # waited for, then read from the store: never traced here
        got = analyze(workload)
        assert replace(got, trace_seconds=0.0) == replace(analyze_workload(workload), trace_seconds=0.0)
    prefetch.wait()
    assert prefetch.process.returncode == 0
    assert store.load_fact("model_names") and "resnet18" in store.load_fact("model_names")


def test_a_stopped_or_failing_second_process_hands_the_work_back(tmp_path):
    store = TraceStore(tmp_path)
    traced_here = []

    def trace_here(workload):
        traced_here.append(workload.batch_size)
        return analyze_workload(workload)

    unused = Prefetch(store)
    unused.stop()                       # the store had the first workload: the child is not needed
    assert unused.process.returncode is not None
    unused.request(SMALL)               # too late: nothing to wait for
    unused.analyzer(trace_here)(SMALL)
    assert traced_here == [4]

    failing = Prefetch(store)
    failing.request(Workload("no_such_model_xyz", parse_inputs("1x3x64x64"), TraceOptions()))
    started = time.perf_counter()
    failing.wait()
    assert failing.process.returncode == 1
    with pytest.raises(Exception, match="no_such_model_xyz"):
        failing.analyzer(analyze_workload)(Workload("no_such_model_xyz", parse_inputs("1x3x64x64"), TraceOptions()))
    assert time.perf_counter() - started < 60   # ended, not timed out
