"""Causal evaluation of interventions against human counterfactuals (ICaCE, CEBaB's metrics)::

    python -m sparsecbm.causal ckpt_path=<run>/checkpoints/best.ckpt [data=cebab data.root=DIR] [split=test]

For every counterfactual pair of the split (``data.counterfactuals``) the model's true effect ``N(x') - N(x)``
is compared with each explainer's estimate (:mod:`sparsecbm.interpret.causal_explainers`). Writes
``icace.json`` (:class:`~sparsecbm.interpret.icace.ICaCEReport`), ``icace_table.md``, ``icace.png`` and the
pairs (``pairs.json``) to ``out_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsecbm.config import check_split, hydra_entry_point
from sparsecbm.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig, session) -> Path:
    """``out_dir``: null (this command's run folder), ``run`` (the checkpoint's run folder) or a folder."""
    out = cfg.get("out_dir")
    if out in (None, "", "null"):
        return Path(cfg.paths.output_dir)
    if str(out) == "run":
        if session.run_dir is None:
            raise ConfigError("out_dir=run writes next to the checkpoint's run folder, but the checkpoint path has none")
        return session.run_dir
    return Path(str(out))


def load_pairs(session, dm, split: str, section):
    """The split's pairs, or a :class:`DataError` that says how to get some."""
    from sparsecbm.data.counterfactuals import CounterfactualConfig, counterfactual_pairs

    section = CounterfactualConfig.coerce(section) if section is not None else None
    if section is None and getattr(dm, "counterfactuals", None) is None:
        raise DataError(
            f"data '{dm.name}' has no counterfactual pairs: its config has no `counterfactuals` section (a "
            f"checkpoint trained before the section existed keeps its old data config). Pass data=cebab (the "
            "current config, with the section) and data.root=DIR, or counterfactuals='{splits: [test]}'")
    pairs = counterfactual_pairs(dm, split, section)
    if pairs is None:
        splits = (section or CounterfactualConfig.coerce(dm.counterfactuals)).splits
        raise DataError(f"split '{split}' of data '{dm.name}' holds no counterfactual pairs "
                        f"(data.counterfactuals.splits is {list(splits)}); pass split={splits[-1]}")
    if len(pairs) == 0:
        raise DataError(f"{pairs.settings.get('source_file', dm.name)}: no counterfactual pairs found in split "
                        f"'{split}' (no two texts of one family differ in exactly one concept)")
    return pairs


def run(cfg: DictConfig):
    """Evaluate the checkpoint's (and the explainers') counterfactual faithfulness; returns the report."""
    from rich.console import Console

    from sparsecbm.interpret.causal_explainers import TrainingReference, evaluate_icace, resolve_explainers
    from sparsecbm.interpret.causal_model import CausalModel
    from sparsecbm.session import session_from_cfg

    split = check_split(cfg.split)
    explainers = cfg.explainers if isinstance(cfg.explainers, str) else list(cfg.explainers)
    session = session_from_cfg(cfg)
    model = CausalModel(session, int(cfg.batch_size), float(cfg.logit_eps))
    proxy = None
    if cfg.get("proxy_ckpt"):
        proxy = CausalModel.load(cfg.proxy_ckpt, cfg.get("accelerator", "auto"), batch_size=int(cfg.batch_size),
                                 eps=float(cfg.logit_eps))
    resolve_explainers(explainers, model, proxy)  # a wrong name or model fails before the data is read
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    section = cfg.get("counterfactuals")
    pairs = load_pairs(session, dm, split, OmegaConf.to_container(section, resolve=True)
                       if OmegaConf.is_config(section) else section)
    train = dm.raw["train"]
    log.info("%d counterfactual pairs in %s (%s); predicting %d training texts", len(pairs), split, pairs.source,
             len(train))
    reference = TrainingReference.of(model, train.texts, train.concepts)
    report = evaluate_icace(model, pairs, reference, explainers, proxy, seed=int(cfg.seed),
                            mask_portion=float(cfg.mask_portion),
                            mask_max_pairs=None if cfg.mask.max_pairs is None else int(cfg.mask.max_pairs))
    report.meta.update({"checkpoint": str(cfg.ckpt_path), "proxy_checkpoint": cfg.get("proxy_ckpt"),
                        "data": dm.name, "title": f"ICaCE error, {model.mode} model, {split} ({len(pairs)} pairs)"})
    out = output_dir(cfg, session)
    report.save(out / "icace.json")
    pairs.save(out / "pairs.json")
    (out / "icace_table.md").write_text(report.markdown())
    if cfg.plot:
        report.plot(out / "icace.png")
    Console().print(report.table())
    log.info("ICaCE report written to %s", out / "icace.json")
    return report


@hydra_entry_point("causal")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
