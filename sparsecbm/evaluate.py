"""Re-evaluate a checkpoint: ``python -m sparsecbm.evaluate ckpt_path=... [data=...] [data_root=DIR]``.

Writes the same ``results.json`` structure as training (val/test metrics, per concept, reference).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sparsecbm.checkpoint import load_checkpoint
from sparsecbm.config import CONF_DIR, quiet_libraries, register_resolvers
from sparsecbm.data.loading import DataError
from sparsecbm.interpret.leakage import ConceptCeiling, bottleneck_report
from sparsecbm.results import reference_baselines, split_metrics, summary_table, write_json

log = logging.getLogger(__name__)
STAGES = {"dev": "val", "test": "test"}


def datamodule_for(module, data_cfg: DictConfig | None, data_root: str | None, cache_dir: str | None):
    """The checkpoint's own data config (or ``data_cfg``), checked against the checkpoint's concepts."""
    if data_cfg is None:
        run_config = module.run_config or {}
        if "data" not in run_config:
            raise ValueError("the checkpoint has no data config; pass data=<name> (and data.root=...)")
        data_cfg = OmegaConf.create(run_config["data"])
    data_cfg = data_cfg.copy()
    if data_root is not None:
        data_cfg.root = data_root
    if cache_dir is not None:
        data_cfg.cache_dir = cache_dir
    data_cfg.tokenizer = module.model.backbone.tokenizer_name
    dm = instantiate(data_cfg)
    if dm.concept_set.concepts != module.concept_set.concepts or dm.concept_set.label != module.concept_set.label:
        raise DataError(
            f"data '{dm.name}' has concepts {dm.concept_set.names} and labels {list(dm.concept_set.label.values)}, "
            f"but the checkpoint was trained on concepts {module.concept_set.names} and labels "
            f"{list(module.concept_set.label.values)}"
        )
    dm.setup()
    return dm


def datamodule_from_cfg(cfg: DictConfig, module):
    """The datamodule an entry point's ``data=`` / ``data_root=`` options ask for (set up)."""
    data_cfg = None
    if cfg.get("data") is not None:
        with open_dict(cfg):  # data configs read the tokenizer from the backbone group
            cfg.backbone = {"tokenizer": module.model.backbone.tokenizer_name}
        data_cfg = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    return datamodule_for(module, data_cfg, cfg.get("data_root"), cfg.paths.cache_dir + "/tokenized")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    module = load_checkpoint(cfg.ckpt_path)
    dm = datamodule_from_cfg(cfg, module)
    trainer = L.Trainer(accelerator=cfg.accelerator, devices=1, logger=False, enable_progress_bar=False)
    names = module.concept_set.names if module.model.has_concepts else []
    results: dict[str, Any] = {}
    ceiling = ConceptCeiling.from_datamodule(dm)
    for split in cfg.splits:
        if split not in STAGES:
            raise ValueError(f"splits: '{split}' is not valid; expected some of {list(STAGES)}")
        loader = dm.loader(split)
        run = trainer.validate if split == "dev" else trainer.test
        metrics = run(module, dataloaders=loader, verbose=False)[0]
        results[STAGES[split]] = split_metrics(metrics, STAGES[split], names)
        results[STAGES[split]].update(bottleneck_report(module, loader, ceiling))
    raw = dm.raw
    trained = module.run_config or {}
    results.update(
        {
            # seed / epochs / config of the run that trained the checkpoint, so `sparsecbm.tables` groups a
            # re-evaluation with (or in place of) its training run; this command's own config is `evaluate_config`
            "run": {"task_name": cfg.task_name, "output_dir": cfg.paths.output_dir, "checkpoint": str(cfg.ckpt_path),
                    "seed": trained.get("seed"), "epochs": (trained.get("trainer") or {}).get("max_epochs"),
                    "wall_time_s": round(time.perf_counter() - start, 2)},
            "model": {"mode": module.mode, "activation": module.model.activation if names else None,
                      "label_head": module.cbm_cfg.get("label_head"), "backbone": module.model.backbone.name_or_path},
            "data": dm.describe(),
            "reference": reference_baselines(raw["train"].concepts, raw["train"].labels, raw["test"].concepts,
                                             raw["test"].labels, dm.concept_set.cardinalities,
                                             dm.concept_set.label.num_classes),
            "config": trained or OmegaConf.to_container(cfg, resolve=True),
            "evaluate_config": OmegaConf.to_container(cfg, resolve=True),
        }
    )
    if hasattr(module.model.backbone, "masked_layers"):
        from sparsecbm.sparsity import subnetwork_stats

        results["subnetworks"] = subnetwork_stats(module.model.backbone, names)
    write_json(Path(cfg.paths.output_dir) / "results.json", results)
    from rich.console import Console

    Console().print(summary_table(results, f"evaluate: {cfg.ckpt_path}"))
    return results


register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    evaluate(cfg)


if __name__ == "__main__":
    main()
