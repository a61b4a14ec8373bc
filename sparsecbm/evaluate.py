"""Re-evaluate a checkpoint: ``python -m sparsecbm.evaluate ckpt_path=... [data=...] [data.root=DIR]``.

Writes the same ``results.json`` structure as training (val/test metrics, per concept, reference).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from sparsecbm.checkpoint import InferenceSession
from sparsecbm.config import check_split, data_request, hydra_entry_point
from sparsecbm.errors import ConfigError
from sparsecbm.interpret.leakage import ConceptCeiling
from sparsecbm.results import summary_table
from sparsecbm.run_result import RunResult, stage_result

log = logging.getLogger(__name__)
STAGES = {"dev": "val", "test": "test"}


def datamodule_for(module, data_cfg: DictConfig | None, data_root: str | None, cache_dir: str | None):
    """The checkpoint's own data config (or ``data_cfg``), checked against the checkpoint's concepts.

    Kept for callers of earlier versions; new code uses :class:`~sparsecbm.checkpoint.InferenceSession`.
    """
    request = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True)) if data_cfg is not None else OmegaConf.create({})
    if data_root is not None:
        request.root = data_root
    return InferenceSession(module, request or None).datamodule(cache_dir)


def session_from_cfg(cfg: DictConfig) -> InferenceSession:
    """The :class:`InferenceSession` an entry point's ``ckpt_path=``, ``accelerator=`` and ``data=`` /
    ``data.root=`` (or deprecated ``data_root=``) options ask for; seeds torch with ``seed``."""
    L.seed_everything(int(cfg.get("seed", 0)), verbose=False)
    session = InferenceSession.from_checkpoint(cfg.ckpt_path, accelerator=cfg.get("accelerator", "auto"))
    session.data_cfg = data_request(cfg, session.module.model.backbone.tokenizer_name)
    return session


def datamodule_from_cfg(cfg: DictConfig, module=None):
    """The set-up datamodule an entry point's ``data=`` / ``data.root=`` options ask for."""
    session = InferenceSession(module, data_request(cfg, module.model.backbone.tokenizer_name))
    return session.datamodule(cfg.paths.cache_dir + "/tokenized")


def evaluate(cfg: DictConfig) -> RunResult:
    """Validate / test a checkpoint on the chosen splits; write ``results.json``. Returns the result."""
    start = time.perf_counter()
    splits = [check_split(s, "splits") for s in ([cfg.splits] if isinstance(cfg.splits, str) else cfg.splits)]
    session = session_from_cfg(cfg)
    module = session.module
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    accelerator = "gpu" if session.device == "cuda" else "cpu"
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False)
    names = module.concept_set.names if module.model.has_concepts else []
    stages: dict[str, Any] = {}
    ceiling = ConceptCeiling.from_datamodule(dm)  # fitted once: the bottleneck reports and the reference
    for split in splits:
        if split not in STAGES:
            raise ConfigError(f"splits: '{split}' is not evaluated; expected some of {list(STAGES)}")
        loader = dm.loader(split)
        run = trainer.validate if split == "dev" else trainer.test
        metrics = run(module, dataloaders=loader, verbose=False)[0]
        stages[STAGES[split]] = stage_result(metrics, STAGES[split], names, module, loader, ceiling,
                                             train_loader=dm.loader("train"), datamodule=dm, split=split)
    trained = module.run_config or {}
    subnetworks = None
    if hasattr(module.model.backbone, "masked_layers"):
        from sparsecbm.sparsity import subnetwork_stats

        subnetworks = subnetwork_stats(module.model.backbone, names)
    result = RunResult.collect(
        stages=stages, module=module, datamodule=dm, ceiling=ceiling,
        # seed / epochs / config of the run that trained the checkpoint, so `sparsecbm.tables` groups a
        # re-evaluation with (or in place of) its training run; this command's own config is `evaluate_config`
        run={"task_name": cfg.task_name, "output_dir": cfg.paths.output_dir, "checkpoint": str(cfg.ckpt_path),
             "seed": trained.get("seed"), "epochs": (trained.get("trainer") or {}).get("max_epochs"),
             "wall_time_s": round(time.perf_counter() - start, 2)},
        model={"label_head": module.cbm.label_head, "backbone": module.model.backbone.name_or_path},
        config=trained or OmegaConf.to_container(cfg, resolve=True),
        evaluate_config=OmegaConf.to_container(cfg, resolve=True),
        subnetworks=subnetworks,
    )
    result.save(cfg.paths.output_dir)
    from rich.console import Console

    Console().print(summary_table(result, f"evaluate: {cfg.ckpt_path}"))
    return result


@hydra_entry_point("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
