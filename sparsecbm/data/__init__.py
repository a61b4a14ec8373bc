"""Data loading, validation and the LightningDataModule (imported on first use: ``loading`` needs no torch)."""

from importlib import import_module

_EXPORTS = {"CBMDataModule": "sparsecbm.data.datamodule", "DataError": "sparsecbm.errors",
            "EncodedSplit": "sparsecbm.data.loading", "load_splits": "sparsecbm.data.loading"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sparsecbm.data' has no attribute {name!r}")
