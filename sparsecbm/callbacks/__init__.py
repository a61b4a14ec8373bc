"""Lightning callbacks and plugins: reproducible epochs, throughput, atomic checkpoints, the pruning schedule."""

from sparsecbm.callbacks.core import AtomicCheckpointIO, EpochSeed, Throughput
from sparsecbm.callbacks.pruning import PruningCallback

__all__ = ["AtomicCheckpointIO", "EpochSeed", "PruningCallback", "Throughput"]
