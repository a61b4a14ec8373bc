"""Lightning callbacks and plugins: reproducible epochs, throughput, atomic checkpoints."""

from sparsecbm.callbacks.core import AtomicCheckpointIO, EpochSeed, Throughput

__all__ = ["AtomicCheckpointIO", "EpochSeed", "Throughput"]
