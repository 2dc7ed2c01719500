"""Build modules with their parameters and buffers on the meta device, the way
``accelerate.init_empty_weights`` does: ``nn.Module.register_parameter``/``register_buffer`` are
patched only while the model is constructed (restored in ``finally``), so constructors that do
real arithmetic on plain tensors (torchvision ``regnet_*`` calls ``.tolist()``) still work, while
weight initialisation runs on meta tensors and costs nothing."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

META = torch.device("meta")
T = TypeVar("T")


@contextmanager
def empty_weights() -> Iterator[None]:
    """Every parameter and buffer registered inside the block lands on the meta device."""
    original_parameter = nn.Module.register_parameter
    original_buffer = nn.Module.register_buffer

    def register_parameter(module: nn.Module, name: str, param) -> None:
        original_parameter(module, name, param)
        registered = module._parameters.get(name)
        if registered is not None and registered.device != META:
            module._parameters[name] = _param_on_meta(registered)

    def register_buffer(module: nn.Module, name: str, tensor, persistent: bool = True) -> None:
        if tensor is not None and tensor.device != META:
            tensor = tensor.to(META)
        original_buffer(module, name, tensor, persistent=persistent)

    original_inits = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS if hasattr(nn.init, name)}
    nn.Module.register_parameter = register_parameter
    nn.Module.register_buffer = register_buffer
    for name, original in original_inits.items():
        setattr(nn.init, name, _skip_on_meta(original))
    try:
        yield
    finally:
        nn.Module.register_parameter = original_parameter
        nn.Module.register_buffer = original_buffer
        for name, original in original_inits.items():
            setattr(nn.init, name, original)


# Initialising a meta tensor computes nothing but still runs torch's Python decompositions
# (~1 ms per call: most of a resnet50 build); skip it for meta tensors only.
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


def _skip_on_meta(init_function):
    def initialise(tensor, *args, **kwargs):
        if isinstance(tensor, torch.Tensor) and tensor.device == META:
            return tensor
        return init_function(tensor, *args, **kwargs)

    return initialise


def _param_on_meta(param: nn.Parameter) -> nn.Parameter:
    extra = dict(param.__dict__)
    if type(param) is nn.Parameter:  # plain parameter: keep any attributes user code hung on it
        moved = nn.Parameter(param.data.to(META), requires_grad=param.requires_grad)
        moved.__dict__.update(extra)
        return moved
    extra["requires_grad"] = param.requires_grad  # subclasses take their attributes as kwargs (accelerate)
    return type(param)(param.data.to(META), **extra)


def move_leftovers_to_meta(module: nn.Module) -> nn.Module:
    """Tensors assigned straight into ``_parameters``/``_buffers`` bypass the patch; move those too."""
    leftovers = [t for t in (*module.parameters(), *module.buffers()) if t.device != META]
    if leftovers:
        module.to(META)
    return module


def build_on_meta(factory: Callable[..., T], *args, **kwargs) -> T:
    """Call ``factory`` with every parameter/buffer it registers placed on meta."""
    with empty_weights():
        built = factory(*args, **kwargs)
    if isinstance(built, nn.Module):
        move_leftovers_to_meta(built)
    return built
