"""What a program that owns its process (our CLI, the app, bench workers) may do to it, and a library
must not do on import: move long-lived objects out of the garbage collector's view."""
from __future__ import annotations

import gc

_owned = False
_frozen_after_tracer = False


def freeze_startup_objects() -> None:
    """Called by a program that owns its process, after its imports: a full collection walks every
    tracked object, and the ~340k that importing torch creates never die, so they are moved out of the
    collector's view (gc.freeze). The next full collection after a trace then walks only newer objects
    (0.2-0.3 s saved after a resnet50 training trace). Also marks the process as ours, so that the tracer,
    imported later on demand (a stored trace needs no PyTorch), freezes its own imports too."""
    global _owned
    _owned = True
    gc.freeze()


def tracer_imported() -> None:
    """The tracer (PyTorch, torchvision) was just imported: in a process we own, freeze those objects."""
    global _frozen_after_tracer
    if _owned and not _frozen_after_tracer:
        _frozen_after_tracer = True
        gc.freeze()
