"""Re-evaluate a checkpoint: ``python -m sparsecbm.evaluate ckpt_path=... [data=...] [data.root=DIR]``.

Writes the same ``results.json`` structure as training (val/test metrics, per concept, reference).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparsecbm.config import check_split, hydra_entry_point
from sparsecbm.errors import ConfigError

log = logging.getLogger(__name__)
STAGES = {"dev": "val", "test": "test"}


def evaluate(cfg: DictConfig):
    """Validate / test a checkpoint on the chosen splits; write ``results.json``. Returns the
    :class:`~sparsecbm.run_result.RunResult`."""
    start = time.perf_counter()
    splits = [check_split(s, "splits") for s in ([cfg.splits] if isinstance(cfg.splits, str) else cfg.splits)]
    for split in splits:
        if split not in STAGES:
            raise ConfigError(f"splits: '{split}' is not evaluated; expected some of {list(STAGES)}")
    import lightning as L

    from sparsecbm.ceiling import ConceptCeiling
    from sparsecbm.interpret.causal_explainers import icace_block
    from sparsecbm.interpret.leakage import split_report
    from sparsecbm.lit import CBMLitModule
    from sparsecbm.results import cbm_title, print_outputs, summary_table
    from sparsecbm.run_result import RunResult, stage_result
    from sparsecbm.session import session_from_cfg

    session = session_from_cfg(cfg)
    model, meta = session.model, session.meta
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    module = CBMLitModule.from_model(model, meta)  # Lightning validates / tests the loaded model itself
    accelerator = "gpu" if session.device.startswith("cuda") else "cpu"
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False)
    names = meta.concepts.names if model.has_concepts else []
    stages: dict[str, Any] = {}
    ceiling = ConceptCeiling.from_datamodule(dm)  # fitted once: the bottleneck reports and the reference
    for split in splits:
        loader = dm.loader(split)
        run = trainer.validate if split == "dev" else trainer.test
        metrics = run(module, dataloaders=loader, verbose=False)[0]
        model.to(session.device)  # Lightning leaves the model on the CPU; the analyses run on the session's device
        report = split_report(model, loader, ceiling, dm.loader("train"))
        if (block := icace_block(session, dm, split)) is not None:  # when the data has counterfactual pairs
            report["icace"] = block
        stages[STAGES[split]] = stage_result(metrics, STAGES[split], names, report)
    trained = meta.run_config or {}
    subnetworks = None
    if model.sparse:
        from sparsecbm.sparsity import subnetwork_stats

        subnetworks = subnetwork_stats(model.backbone, names)
    result = RunResult.collect(
        stages=stages, model=model, datamodule=dm, ceiling=ceiling,
        # seed / epochs / config of the run that trained the checkpoint, so `sparsecbm.tables` groups a
        # re-evaluation with (or in place of) its training run; this command's own config is `evaluate_config`
        run={"task_name": cfg.task_name, "output_dir": cfg.paths.output_dir, "checkpoint": str(cfg.ckpt_path),
             "seed": trained.get("seed"), "epochs": (trained.get("trainer") or {}).get("max_epochs"),
             "wall_time_s": round(time.perf_counter() - start, 2)},
        facts={"label_head": meta.cbm.get("label_head", "linear"), "backbone": model.backbone.name_or_path},
        config=trained or OmegaConf.to_container(cfg, resolve=True),
        evaluate_config=OmegaConf.to_container(cfg, resolve=True),
        subnetworks=subnetworks,
    )
    path = result.save(cfg.paths.output_dir)
    from rich.console import Console

    Console().print(summary_table(result, f"evaluate: {cbm_title(meta.cbm)} ({cfg.ckpt_path})"))
    print_outputs({"results": path})
    return result


@hydra_entry_point("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
