"""Data loading, validation and the LightningDataModule (imported on first use: ``loading`` needs no torch)."""

from sparsecbm.lazy import lazy_exports

_EXPORTS = {"CBMDataModule": "sparsecbm.data.datamodule", "DataError": "sparsecbm.errors",
            "EncodedSplit": "sparsecbm.data.loading", "load_splits": "sparsecbm.data.loading"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)
