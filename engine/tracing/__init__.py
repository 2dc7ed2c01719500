"""Pieces of the trace: module attribution, the dispatch-mode recorder, the training step,
data-dependent-op policies and the assembly into an ``AnalysisResult``. Entry point: engine.trace."""
