"""Concept interventions from the command line.

One text (predict, edit, re-predict)::

    python -m sparsecbm.intervene ckpt_path=... text="The food was bland." set='{food: Positive}'

A data split (ground-truth intervention curves per policy, ``intervention.json`` + ``intervention_curve.png``)::

    python -m sparsecbm.intervene ckpt_path=... data.root=DIR split=test policy=[random,oracle]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sparsecbm.config import check_split, hydra_entry_point
from sparsecbm.errors import CheckpointError, ConfigError
from sparsecbm.evaluate import session_from_cfg
from sparsecbm.interpret.curves import InterventionCurve, collect, intervention_curve
from sparsecbm.interpret.intervention import (
    InterventionError,
    InterventionResult,
    intervene,
    require_concepts,
)
from sparsecbm.interpret.policies import POLICIES
from sparsecbm.interpret.strategies import Bottleneck

log = logging.getLogger(__name__)


def policy_names(policy: Any) -> list[str]:
    """``policy=oracle`` or ``policy=[random,oracle]`` (a list or ListConfig) -> checked list of names."""
    names = [policy] if isinstance(policy, str) else list(policy or POLICIES)
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise InterventionError(f"unknown intervention policy {bad}; valid policies: {list(POLICIES)}")
    return names


def run(cfg: DictConfig) -> InterventionResult | InterventionCurve:
    """Intervene on one text (``text=``) or a split; write ``intervention.json`` (+ PNG) to the run dir."""
    from rich.console import Console

    out = Path(cfg.paths.output_dir)
    if cfg.get("text") is None:
        check_split(cfg.split)
    session = session_from_cfg(cfg)
    module = session.module
    require_concepts(module)
    if cfg.get("text") is not None:
        text = str(cfg.text)
        result = intervene(module, text, cfg.get("set"), eps=cfg.logit_eps, max_length=session.max_length)
        _, n_cut = session.tokenize([text])
        result.meta.update({"checkpoint": str(cfg.ckpt_path), "max_length": session.max_length,
                            "truncated": bool(n_cut)})
        if n_cut:
            log.warning("the text is longer than max_length=%d tokens: only its first %d tokens were read "
                        "(data.max_length=N to change it)", session.max_length, session.max_length)
        result.save(out / "intervention.json")
        Console().print(result.table())
        return result

    if cfg.get("level", "concept") not in ("concept", "mask"):
        raise ConfigError(f"level='{cfg.level}' is not valid; expected concept or mask")
    if cfg.get("level", "concept") == "mask":
        return run_mask_level(cfg, session, out)
    if cfg.get("set") is not None:
        raise InterventionError("set=... edits one text: pass text='...' too (a split uses ground-truth edits)")
    policies = policy_names(cfg.policy)
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    outputs, truth, labels = collect(module, dm.loader(cfg.split, batch_size=cfg.batch_size))
    curve = intervention_curve(Bottleneck.from_model(module.model, outputs, cfg.logit_eps), truth, labels,
                               module.concept_set, policies, seeds=range(int(cfg.random_seeds)))
    curve.meta.update({"checkpoint": str(cfg.ckpt_path), "split": cfg.split, "mode": module.mode,
                       "activation": module.model.activation, "logit_eps": cfg.logit_eps,
                       "title": f"{module.mode} CBM ({module.model.activation}), {cfg.split}, n={curve.n_examples}"})
    curve.save(out / "intervention.json")
    if cfg.plot:
        curve.plot(out / "intervention_curve.png")
    Console().print(curve.table(f"{curve.meta['title']}: task acc / macro-F1 (%) vs k"))
    log.info("intervention results written to %s", out / "intervention.json")
    return curve


def run_mask_level(cfg: DictConfig, session, out: Path) -> dict[str, Any]:
    """Subnetwork-level interventions over a split: rectification, breakage, accuracy change, latency."""
    from rich.console import Console
    from rich.table import Table

    from sparsecbm.results import write_json
    from sparsecbm.sparsity.intervention import evaluate_mask_interventions

    module = session.module
    if not hasattr(module.model.backbone, "masked_layers"):
        raise CheckpointError(f"level=mask edits per-concept subnetworks, but {cfg.ckpt_path} was trained without "
                              "sparsity=...; use level=concept or a checkpoint of a sparse run")
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    loader = dm.loader(cfg.split, batch_size=1)
    n, n_hold = int(cfg.mask.examples), int(cfg.mask.holdout)
    batches = [b for _, b in zip(range(n + n_hold), loader)]
    results = {}
    for mode in cfg.mask.modes:
        if mode not in ("restore", "online"):
            raise InterventionError(f"mask.modes: '{mode}' is not valid; expected restore and/or online")
        results[mode] = evaluate_mask_interventions(module.model, batches[:n], batches[n:], float(cfg.mask.portion),
                                                    restore=mode == "restore")
    payload = {"kind": "mask_intervention", "checkpoint": str(cfg.ckpt_path), "split": cfg.split, "results": results}
    write_json(out / "mask_intervention.json", payload)
    table = Table(title=f"mask-level intervention ({cfg.split}, portion {cfg.mask.portion})")
    for col in ("mode", "intervened", "rectified %", "breakage %", "task acc before", "after", "ms / concept"):
        table.add_column(col)
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for mode, r in results.items():
        ms = r["ms_per_intervened_concept"]
        table.add_row(mode, str(r["intervened_concepts"]), pct(r["rectification_rate"]), pct(r["breakage_rate"]),
                      pct(r["task_acc_before"]), pct(r["task_acc_after"]), "-" if ms is None else f"{ms:.1f}")
    Console().print(table)
    return payload


@hydra_entry_point("intervene")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
