"""Lightning callbacks and plugins: reproducible epochs, throughput, atomic checkpoints, the pruning schedule."""

from sparsecbm.callbacks.core import AtomicCheckpointIO, CheckpointMetadata, EpochSeed, Throughput
from sparsecbm.callbacks.pruning import PruningCallback

__all__ = ["AtomicCheckpointIO", "CheckpointMetadata", "EpochSeed", "PruningCallback", "Throughput"]
