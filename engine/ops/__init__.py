"""Per-op formulas. Importing this package registers every formula module below."""
from engine.ops import matmul  # noqa: F401
