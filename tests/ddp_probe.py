"""A callback for the data-parallel test: every rank writes its masks and synced test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class RankProbe(L.Callback):
    """Writes ``masks_rank<r>.safetensors`` after training and ``metrics_rank<r>.json`` after testing."""

    def on_train_end(self, trainer, pl_module):
        from sparsecbm.sparsity import export_masks

        sb = pl_module.model.backbone
        if hasattr(sb, "masked_layers"):
            export_masks(sb, pl_module.concept_set.names,
                         Path(trainer.default_root_dir) / f"masks_rank{trainer.global_rank}.safetensors")

    def on_test_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        out = Path(trainer.default_root_dir) / f"metrics_rank{trainer.global_rank}.json"
        out.write_text(json.dumps({"world_size": trainer.world_size, "metrics": metrics}))
