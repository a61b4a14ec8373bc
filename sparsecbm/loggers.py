"""A CSV logger that keeps what an interrupted run wrote when the run resumes.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it finds one in its folder, so resuming a run
(``ckpt_path=last`` into the same folder) lost every metric of the epochs before the interruption. This
logger keeps the file: the rows of finished epochs stay, the rows of the epoch that was interrupted (it
is trained again from its start) are dropped when the resumed run logs its first row, and new rows are
appended; a column that appears later extends the header. ``hparams.yaml`` of the run is kept too.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from sparsecbm.outputs import atomic_write


class _KeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        self._first = True
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))

    def log_hparams(self, params: dict[str, Any]) -> None:
        if not self.hparams and os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)):
            self.hparams.update(params)  # a resumed run: the run's own hparams.yaml stays as it was
            return
        super().log_hparams(params)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if self._first:
            self._first = False
            epoch = metrics_dict.get("epoch")
            if epoch is not None and os.path.isfile(self.metrics_file_path):
                self._drop_rows_from_epoch(float(epoch))
        super().log_metrics(metrics_dict, step)

    def _drop_rows_from_epoch(self, epoch: float) -> None:
        """Rows logged in ``epoch`` or later by the interrupted run: that epoch is trained again."""
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))

        def later(row: dict[str, str]) -> bool:
            try:
                return float(row.get("epoch") or "nan") >= epoch
            except ValueError:
                return False

        keep = [r for r in rows if not later(r)]
        if len(keep) == len(rows):
            return
        with atomic_write(self.metrics_file_path) as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(keep)


class KeepingCSVLogger(CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that keeps an existing ``metrics.csv`` (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment
