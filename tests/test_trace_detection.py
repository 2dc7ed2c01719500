"""A real detection model traces to completion under the documented worst-case policies."""
import torch
from torchvision.models import detection

from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.trace import trace_model
from torchbudget.engine.tracing import policies


def test_fasterrcnn_traces_with_worst_case_policies():
    with torch.device("meta"):   # built like our model sources do: no parameter memory
        model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    r = trace_model(model, [InputSpec((1, 3, 320, 320))])
    assert {policies.NONZERO, policies.NMS, policies.UNIQUE} <= set(r.policies)
    # every box kept by NMS, then the model's own cap: detections_per_img = 100
    assert r.module("").output_shapes == ((100, 4), (100,), (100,))
    nms = [op for op in r.ops if op.op == "torchvision.nms.default"]
    assert nms and all(op.outputs[0].shape == (op.inputs[0].shape[0],) for op in nms)
    assert r.totals.params == sum(p.numel() for p in model.parameters())
    assert r.module("backbone").macs > 0 and r.module("roi_heads").macs > 0
