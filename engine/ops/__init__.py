"""Per-op formulas. Importing this package registers every formula module below
(``thop`` last: it derives its preset from the default formulas)."""
from torchbudget.engine.ops import (attention, collective, conv, detection, foreach, matmul, norm, pointwise,  # noqa: F401
                                    pool, quantized, reduce, sampling, zero)
from torchbudget.engine.ops import thop  # noqa: F401  (must come last)
