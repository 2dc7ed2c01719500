"""Exact counting of PyTorch models on meta/fake tensors, and the planner built on the trace.
No Qt, no printing: results are plain immutable dataclasses (engine.results)."""
