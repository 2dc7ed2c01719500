"""Build modules with their parameters and buffers on the meta device, the way
``accelerate.init_empty_weights`` does: ``nn.Module.register_parameter``/``register_buffer`` are
patched only while the model is constructed (restored in ``finally``), so constructors that do
real arithmetic on plain tensors (torchvision ``regnet_*`` calls ``.tolist()``) still work, while
weight initialisation runs on meta tensors and costs nothing."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

META = torch.device("meta")
T = TypeVar("T")


# The patches are process-wide but act only in threads inside ``empty_weights``: the GUI builds
# models in worker threads while other code (a real CPU model in validate or a test) may build
# modules at the same time. Installed once, reference-counted, so overlapping builds never
# "restore" each other's patched functions.
_active = threading.local()
_install_lock = threading.Lock()
_install_count = 0
_originals: dict = {}


def _building() -> bool:
    return getattr(_active, "depth", 0) > 0


def _install() -> None:
    original_parameter = nn.Module.register_parameter
    original_buffer = nn.Module.register_buffer

    def register_parameter(module: nn.Module, name: str, param) -> None:
        original_parameter(module, name, param)
        registered = module._parameters.get(name)
        if _building() and registered is not None and registered.device != META:
            module._parameters[name] = _param_on_meta(registered)

    def register_buffer(module: nn.Module, name: str, tensor, persistent: bool = True) -> None:
        if _building() and tensor is not None and tensor.device != META:
            tensor = tensor.to(META)
        original_buffer(module, name, tensor, persistent=persistent)

    _originals.clear()
    _originals["register_parameter"] = original_parameter
    _originals["register_buffer"] = original_buffer
    _originals["init"] = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS if hasattr(nn.init, name)}
    nn.Module.register_parameter = register_parameter
    nn.Module.register_buffer = register_buffer
    for name, original in _originals["init"].items():
        setattr(nn.init, name, _skip_on_meta(original))


def _uninstall() -> None:
    nn.Module.register_parameter = _originals["register_parameter"]
    nn.Module.register_buffer = _originals["register_buffer"]
    for name, original in _originals["init"].items():
        setattr(nn.init, name, original)
    _originals.clear()


@contextmanager
def empty_weights() -> Iterator[None]:
    """Every parameter and buffer registered in this thread inside the block lands on the meta device."""
    global _install_count
    with _install_lock:
        if _install_count == 0:
            _install()
        _install_count += 1
    _active.depth = getattr(_active, "depth", 0) + 1
    try:
        yield
    finally:
        _active.depth -= 1
        with _install_lock:
            _install_count -= 1
            if _install_count == 0:
                _uninstall()


# Initialising a meta tensor computes nothing but still runs torch's Python decompositions
# (~1 ms per call: most of a resnet50 build); skip it for meta tensors only.
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


def _skip_on_meta(init_function):
    def initialise(tensor, *args, **kwargs):
        if _building() and isinstance(tensor, torch.Tensor) and tensor.device == META:
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
