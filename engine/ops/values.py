"""What a trace knows of a data-less tensor's values.

Fake tensors carry shapes, not data. Where the trace models the values a data-dependent op will read (the
mixture-of-experts routing of ``engine/tracing/routing.py``: which experts each token goes to), it keeps them
next to the fake tensor as a real CPU tensor. A formula whose count depends on values reads them here (the
group offsets of ``_grouped_mm``); ``None`` means the values are not known, and the formula takes its
shape-only rule."""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

ATTRIBUTE = "_torchbudget_known"


class StorageCell:
    """Validity shared by every known tensor on one fake storage: an in-place write the trace could not
    replay on the known values (or a write through a view) makes all of them unknown at once."""

    __slots__ = ("valid",)

    def __init__(self):
        self.valid = True


class Known:
    """The values of one fake tensor: ``value`` (a real CPU tensor of the same shape), or a ``recipe`` that
    builds it on first use (constant fills and ``arange``: most never meet a routing value)."""

    __slots__ = ("value", "recipe", "cell")

    def __init__(self, value: torch.Tensor | None, cell: StorageCell, recipe=None):
        self.value = value
        self.recipe = recipe
        self.cell = cell


def known_record(t) -> Known | None:
    record = getattr(t, ATTRIBUTE, None) if isinstance(t, torch.Tensor) else None
    return record if record is not None and record.cell.valid else None


def known_values(t) -> torch.Tensor | None:
    """The modelled values of fake tensor ``t`` (a real CPU tensor), or None when the trace does not know them."""
    record = known_record(t)
    return None if record is None else record.value


def known_list(t) -> list | None:
    """``known_values(t).tolist()`` (flattened), read outside the fake mode (a formula runs inside it)."""
    values = known_values(t)
    if values is None:
        return None
    with unset_fake_temporarily():
        return values.reshape(-1).tolist()


__all__ = ["ATTRIBUTE", "Known", "StorageCell", "known_list", "known_record", "known_values"]
