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
from sparsecbm.errors import CheckpointError, ConfigError, InterventionError
from sparsecbm.results import cbm_title, print_outputs

log = logging.getLogger(__name__)


def policy_names(policy: Any) -> list[str]:
    """``policy=oracle`` or ``policy=[random,oracle]`` (a list or ListConfig) -> checked list of names."""
    from sparsecbm.interpret.policies import POLICIES

    names = [policy] if isinstance(policy, str) else list(policy or POLICIES)
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise InterventionError(f"unknown intervention policy {bad}; valid policies: {list(POLICIES)}")
    return names


def run(cfg: DictConfig):
    """Intervene on one text (``text=``) or a split; write ``intervention.json`` (+ PNG) to the run dir.
    Returns the :class:`~sparsecbm.interpret.intervention.InterventionResult`, the
    :class:`~sparsecbm.interpret.curves.InterventionCurve` or the mask-level payload."""
    from rich.console import Console

    from sparsecbm.interpret.intervention import intervene, require_concepts
    from sparsecbm.session import session_from_cfg

    out = Path(cfg.paths.output_dir)
    if cfg.get("text") is None:
        check_split(cfg.split)
        if cfg.get("level", "concept") not in ("concept", "mask"):
            raise ConfigError(f"level='{cfg.level}' is not valid; expected concept or mask")
        if cfg.get("level", "concept") == "concept":
            if cfg.get("set") is not None:
                raise InterventionError("set=... edits one text: pass text='...' too (a split uses ground-truth edits)")
            policies = policy_names(cfg.policy)
    session = session_from_cfg(cfg)
    require_concepts(session.model)
    if cfg.get("text") is not None:
        result = intervene(session, str(cfg.text), cfg.get("set"), eps=cfg.logit_eps)
        result.meta["checkpoint"] = str(cfg.ckpt_path)
        if result.meta["truncated"]:
            log.warning("the text is longer than max_length=%d tokens: only its first %d tokens were read "
                        "(data.max_length=N to change it)", session.max_length, session.max_length)
        path = result.save(out / "intervention.json")
        Console().print(result.table())
        print_outputs({"intervention": path})
        return result

    if cfg.get("level", "concept") == "mask":
        return run_mask_level(cfg, session, out)
    from sparsecbm.interpret.curves import intervention_curve
    from sparsecbm.interpret.strategies import Bottleneck

    model = session.model
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    split = session.collect(dm.loader(cfg.split, batch_size=cfg.batch_size))
    curve = intervention_curve(Bottleneck.from_model(model, split.outputs, cfg.logit_eps), split.truth, split.labels,
                               model.concepts, policies, seeds=range(int(cfg.random_seeds)))
    curve.meta.update({"checkpoint": str(cfg.ckpt_path), "split": cfg.split, "mode": model.mode,
                       "activation": model.activation, "logit_eps": cfg.logit_eps,
                       "title": f"{cbm_title(session.meta.cbm)}, {cfg.split}, n={curve.n_examples}"})
    path = curve.save(out / "intervention.json")
    plot = curve.plot(out / "intervention_curve.png") if cfg.plot else None
    Console().print(curve.table(f"{curve.meta['title']}: task acc / macro-F1 (%) vs k"))
    print_outputs({"intervention": path, "curve": plot})
    return curve


def run_mask_level(cfg: DictConfig, session, out: Path) -> dict[str, Any]:
    """Subnetwork-level interventions over a split: rectification, breakage, accuracy change, latency."""
    from rich.console import Console
    from rich.table import Table

    from sparsecbm.jsonio import write_json
    from sparsecbm.sparsity.mask_editing import evaluate_mask_interventions

    model = session.model
    if not model.sparse:
        raise CheckpointError(f"level=mask edits per-concept subnetworks, but {cfg.ckpt_path} was trained without "
                              "sparsity=...; use level=concept or a checkpoint of a sparse run")
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    loader = dm.loader(cfg.split, batch_size=1)
    n, n_hold = int(cfg.mask.examples), int(cfg.mask.holdout)
    batches = [{k: v.to(session.device) for k, v in b.items()} for _, b in zip(range(n + n_hold), loader)]
    results = {}
    for mode in cfg.mask.modes:
        if mode not in ("restore", "online"):
            raise InterventionError(f"mask.modes: '{mode}' is not valid; expected restore and/or online")
        results[mode] = evaluate_mask_interventions(model, batches[:n], batches[n:], float(cfg.mask_portion),
                                                    restore=mode == "restore")
    payload = {"kind": "mask_intervention", "checkpoint": str(cfg.ckpt_path), "split": cfg.split, "results": results}
    path = write_json(out / "mask_intervention.json", payload)
    table = Table(title=f"mask-level intervention ({cfg.split}, portion {cfg.mask_portion})")
    for col in ("mode", "intervened", "rectified %", "breakage %", "task acc before", "after", "ms / concept"):
        table.add_column(col)
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for mode, r in results.items():
        ms = r["ms_per_intervened_concept"]
        table.add_row(mode, str(r["intervened_concepts"]), pct(r["rectification_rate"]), pct(r["breakage_rate"]),
                      pct(r["task_acc_before"]), pct(r["task_acc_after"]), "-" if ms is None else f"{ms:.1f}")
    Console().print(table)
    print_outputs({"mask intervention": path})
    return payload


@hydra_entry_point("intervene")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
