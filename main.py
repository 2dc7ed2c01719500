"""TorchBudget from a checkout: ``python main.py`` opens the desktop app; ``python main.py COMMAND`` runs
the CLI (see --help). Installed, the same entry point is the ``torchbudget`` command."""
from __future__ import annotations

import sys

from torchbudget.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
