"""Per-op formulas. Importing this package registers every formula module below
(``thop`` last: it derives its preset from the default formulas)."""
from torchbudget.engine.ops import (attention, conv, detection, foreach, matmul, norm, pointwise, pool, quantized,  # noqa: F401
                        reduce, sampling, zero)
from torchbudget.engine.ops import thop  # noqa: F401  (must come last)
