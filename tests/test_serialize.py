"""Result serialization: exact round trip through JSON text, optional ops, clear errors on bad data."""
from __future__ import annotations

import json

import pytest

from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import (AnalysisResult, MemoryCategory, ModuleNode, OpKind, OpRecord, OpStatus, Phase, StorageEvent,
                            TensorMeta, Totals, TraceOptions, UncountedOp, frozen_map)
from torchbudget.engine.serialize import ResultFormatError, result_from_dict, result_to_dict


def _sample_result() -> AnalysisResult:
    conv_in = TensorMeta((2, 3, 8, 8), "float32", 2 * 3 * 8 * 8 * 4)
    conv_out = TensorMeta((2, 4, 8, 8), "bfloat16", 2 * 4 * 8 * 8 * 2)
    ops = (
        OpRecord(0, "aten.convolution.default", "conv", Phase.FORWARD, (conv_in,), (conv_out,), conv_in.nbytes,
                 conv_out.nbytes, 13824, 27648, OpStatus.COUNTED, OpKind.CONV, "bfloat16"),
        OpRecord(1, "aten.view.default", "", Phase.BACKWARD, (conv_out,), (conv_out,), 0, 0, 0, 0, OpStatus.ZERO,
                 OpKind.VIEW, "float32", launches_kernel=False),
        OpRecord(2, "aten.foo.default", "", Phase.OPTIMIZER, (), (TensorMeta((), "int64", 8),), 0, 8, 0, 0,
                 OpStatus.UNCOUNTED, OpKind.OTHER, "float32"),
    )
    events = (StorageEvent(-1, "alloc", 0, 384, MemoryCategory.WEIGHTS, Phase.FORWARD),
              StorageEvent(2, "free", 7, 1024, MemoryCategory.OPTIMIZER_STATE, Phase.OPTIMIZER))
    root = ModuleNode("", "Net", "Net", 0, None, ("conv",), ((2, 4, 8, 8), (1,)), 1, 0, 112, 112, 13824, 13824,
                      0, 27649, 55296, 1536, 1024, 1024)
    conv = ModuleNode("conv", "conv", "Conv2d", 1, "", (), ((2, 4, 8, 8),), 2, 112, 112, 100, 13824, 13824,
                      27648, 27648, 55296, 1536, 1024, 1024)
    totals = Totals(112, 100, 9, 448, 36, frozen_map({"float32": 400, "bfloat16": 48}), 13824, 27649, 55296, 12,
                    1536, 1024, 1024, 1536, 1024)
    return AnalysisResult("Net", (InputSpec((2, 3, 8, 8)), InputSpec((2, 5), "int64", "ids")),
                          TraceOptions("train", "bf16-amp", None, True, "thop"), totals, (root, conv), ops, events,
                          (UncountedOp("aten.foo.default", 1, ("",)),), 2 / 3, ("a warning",), ("worst case",), 0.25)


def test_round_trip_through_json_text_is_exact():
    result = _sample_result()
    text = json.dumps(result_to_dict(result))
    back = result_from_dict(json.loads(text))
    assert back == result
    assert isinstance(back.ops[0].phase, Phase) and isinstance(back.storage_events[1].category, MemoryCategory)
    assert back.inputs[1].name == "ids" and back.modules[0].output_shapes == ((2, 4, 8, 8), (1,))


def test_top_level_layout_and_optional_ops():
    result = _sample_result()
    data = result_to_dict(result, include_ops=False, include_events=False)
    assert {"model", "inputs", "options", "totals", "layers", "uncounted_ops", "coverage", "warnings",
            "policies"} <= set(data)
    assert "ops" not in data and "storage_events" not in data
    assert data["totals"]["params"] == 112 and data["totals"]["macs"] == 13824
    assert data["layers"][1]["path"] == "conv" and data["layers"][1]["output_shapes"] == [[2, 4, 8, 8]]
    back = result_from_dict(data)
    assert back.ops == () and back.storage_events == ()
    assert back.totals == result.totals and back.modules == result.modules


@pytest.mark.parametrize("bad", [[], {"format": "other"}, {"format": "torchbudget-analysis/1", "model": "x"}])
def test_malformed_data_is_a_user_error(bad):
    with pytest.raises(ResultFormatError):
        result_from_dict(bad)


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_a_real_trace_round_trips_exactly(mode):
    from torchbudget.engine.api import analyze

    result = analyze("resnet18", "2x3x32x32", mode=mode, optimizer="adamw")
    assert result.ops and result.storage_events
    back = result_from_dict(json.loads(json.dumps(result_to_dict(result))))
    assert back == result
