"""TorchBudget's one top-level name. Its subpackages live in the checkout's root folders (engine/,
hardware/, gui/, cli/, resources/, bench/, as the product card lays them out) and are installed under
``torchbudget.`` so that nothing generic (``engine``, ``gui``...) lands at the top of site-packages, and a
user's model file can import its own ``engine.py``."""
from __future__ import annotations

import os

_here = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(_here, "engine")):
    # a checkout: torchbudget/ sits beside engine/, hardware/... (an installed copy has them inside)
    __path__.append(os.path.dirname(_here))  # noqa: F821 - a package's __path__
