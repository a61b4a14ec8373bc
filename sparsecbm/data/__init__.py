"""Data loading, validation and the LightningDataModule."""

from sparsecbm.data.datamodule import CBMDataModule
from sparsecbm.data.loading import DataError, EncodedSplit, load_splits

__all__ = ["CBMDataModule", "DataError", "EncodedSplit", "load_splits"]
