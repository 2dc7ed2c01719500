"""The repeated blocks of a model: one rule for everything that works per block.

The **blocks** are the non-leaf children of the shallowest ModuleList/Sequential holding at least two of them
(a decoder's layers, ResNet's stages' blocks, ViT's encoder layers); where several containers share that depth
(ResNet's four stages) their blocks are all taken, in order. Users of the rule: FSDP units
(engine.distributed.strategies) and activation checkpointing's regions (engine.tracing.training), which is what
transformers' ``gradient_checkpointing_enable``, timm's ``set_grad_checkpointing`` and torch's
``checkpoint_wrapper`` / FSDP recipes checkpoint: each repeated block.

Also here: which modules checkpoint *themselves* (transformers' own gradient checkpointing, switched on by the
user's code before the model reaches us)."""
from __future__ import annotations

import sys

from torch import nn

CONTAINERS = (nn.ModuleList, nn.Sequential)


def is_leaf(module: nn.Module | None) -> bool:
    return module is None or not module._modules


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, block) of the repeated blocks, in order; [] when the model has none."""
    best: list[tuple[str, nn.Module]] = []
    best_depth = None
    for path, module in model.named_modules():
        if not path or not isinstance(module, CONTAINERS):
            continue
        blocks = [(f"{path}.{name}", child) for name, child in module._modules.items() if not is_leaf(child)]
        if len(blocks) < 2:
            continue
        depth = path.count(".")
        if best_depth is None or depth < best_depth:
            best, best_depth = blocks, depth
        elif depth == best_depth:
            best += blocks
    return best


def own_checkpointing(model: nn.Module) -> tuple[list[str], list[str], dict]:
    """The model's own (transformers) gradient checkpointing, as ``gradient_checkpointing_enable()`` leaves it:
    (paths of every module whose ``gradient_checkpointing`` flag is on, the paths among them that are
    transformers' per-layer ``GradientCheckpointingLayer`` (each checkpoints its own forward), the keyword
    arguments its checkpoint function passes to torch.utils.checkpoint). ([], [], {}) when it is off."""
    flagged = [(path, m) for path, m in model.named_modules()
               if getattr(m, "gradient_checkpointing", False) is True
               and callable(getattr(m, "_gradient_checkpointing_func", None))]
    if not flagged:
        return [], [], {}
    layers_module = sys.modules.get("transformers.modeling_layers")
    layer_class = getattr(layers_module, "GradientCheckpointingLayer", None)
    layers = [path for path, m in flagged if layer_class is not None and isinstance(m, layer_class)]
    kwargs = dict(getattr(flagged[0][1]._gradient_checkpointing_func, "keywords", None) or {})
    return [path for path, _ in flagged], layers, kwargs
