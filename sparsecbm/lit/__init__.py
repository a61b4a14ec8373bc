"""Lightning training module and metrics."""

from sparsecbm.lit.metrics import CBMMetrics
from sparsecbm.lit.module import CBMLitModule

__all__ = ["CBMLitModule", "CBMMetrics"]
