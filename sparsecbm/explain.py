"""Explain a checkpoint's predictions: ``python -m sparsecbm.explain ckpt_path=... text="..."``.

Or on a data split: ``python -m sparsecbm.explain ckpt_path=... split=test n=50 [data=cebab] [data.root=DIR]``.
Writes ``explanations.json``, ``report.html`` and PNGs into the run folder; with
``faithfulness=true`` also ``faithfulness.json`` and ``faithfulness.md`` comparing ``methods``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sparsecbm.config import check_split, hydra_entry_point
from sparsecbm.jsonio import write_json

log = logging.getLogger(__name__)


def _text_batches(cfg: DictConfig, session) -> list[tuple[dict, list[str]]]:
    texts = [cfg.text] if isinstance(cfg.text, str) else [str(t) for t in cfg.text]
    batch, truncated = session.tokenize(texts)
    if any(truncated):
        log.warning("%d of %d texts are longer than max_length=%d tokens: only their first %d tokens are explained "
                    "(data.max_length=N to change it)", sum(truncated), len(texts), session.max_length,
                    session.max_length)
    return [(batch, texts)]


def _data_batches(cfg: DictConfig, session) -> list[tuple[dict, list[str]]]:
    """The first ``n`` examples of the split in batches of similar length: a batch is as long as its longest
    text and the attribution's cost follows it (the explanations are put back in the split's order)."""
    split = check_split(cfg.split)
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    raw, ds, collate = dm.raw[split], dm.splits[split], dm.collator()
    items = sorted((ds[i] for i in range(min(int(cfg.n), len(ds)))), key=lambda it: len(it["input_ids"]))
    out = []
    for start in range(0, len(items), int(cfg.batch_size)):
        batch = {k: v.to(session.device) for k, v in collate(items[start:start + int(cfg.batch_size)]).items()}
        out.append((batch, [raw.texts[int(i)] for i in batch["index"]]))
    return out


def batches_for(cfg: DictConfig, session) -> list[tuple[dict, list[str]]]:
    """``[(batch, texts)]`` for ``text=...`` or ``split=... n=...`` of an
    :class:`~sparsecbm.session.InferenceSession`."""
    return _text_batches(cfg, session) if cfg.get("text") else _data_batches(cfg, session)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Explain (and optionally compare attribution methods); write the artefacts. Returns their paths and tables."""
    from sparsecbm.interpret.explainer import explain_batch, explanation_set
    from sparsecbm.interpret.html_report import write_pngs, write_report
    from sparsecbm.session import session_from_cfg

    if not cfg.get("text"):
        check_split(cfg.split)
    session = session_from_cfg(cfg)  # seeds torch with cfg.seed
    session.require_concepts("explain concepts")
    model = session.model
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = batches_for(cfg, session)
    options = OmegaConf.to_container(cfg.attribution, resolve=True)
    results_json = session.run_dir / "results.json" if session.run_dir is not None else None
    es = explanation_set(session, [], cfg.method, results_json, meta={"attribution": options})
    kept = []
    order = []
    for batch, texts in batches if cfg.get("explanations", True) else []:
        es.explanations += explain_batch(session, batch, cfg.method, texts, units=bool(cfg.units), **options)
        order += batch["index"].tolist() if "index" in batch else range(len(order), len(order) + len(texts))
        if hasattr(model.token_pooler, "kept_fraction"):  # token gates
            with torch.no_grad():
                extras = model.concept_outputs(batch["input_ids"], batch["attention_mask"]).pooler
            kept.append(model.token_pooler.kept_fraction(extras, batch["attention_mask"]).cpu())
    if kept:
        es.token_gates = {
            "budget": model.token_pooler.budget,
            "kept_fraction": float(torch.cat(kept, 1).mean()),
        }
    es.explanations = [e for _, e in sorted(zip(order, es.explanations), key=lambda pair: pair[0])]
    result: dict[str, Any] = {"explanations": str(es.save(out_dir / "explanations.json"))}
    md = None
    if cfg.faithfulness:

        def save(table):  # after every method, so a long comparison leaves partial results
            write_json(
                out_dir / "faithfulness.json",
                {
                    "table": table,
                    "checkpoint": str(cfg.ckpt_path),
                    "attribution": options,
                    "concepts": cfg.concepts,
                    "fractions": list(cfg.fractions),
                    "deletion_steps": int(cfg.deletion_steps),
                },
            )
            from sparsecbm.interpret.faithfulness import markdown_table

            (out_dir / "faithfulness.md").write_text(markdown_table(table, cfg.fractions) + "\n")

        from sparsecbm.interpret.faithfulness import compare_faithfulness, markdown_table

        table = compare_faithfulness(
            session,
            batches,
            list(cfg.methods),
            options,
            cfg.fractions,
            int(cfg.deletion_steps),
            cfg.concepts,
            save,
        )
        md = markdown_table(table, cfg.fractions)
        result["faithfulness"] = table
    if cfg.report:
        result["report"] = str(write_report(es, out_dir / "report.html", md))
        result["pngs"] = [str(p) for p in write_pngs(es, out_dir, int(cfg.pngs))]
    return result


@hydra_entry_point("explain")
def main(cfg: DictConfig) -> None:
    from sparsecbm.results import print_outputs

    result = run(cfg)
    print_outputs({"explanations": result["explanations"], "report": result.get("report"),
                   "faithfulness": str(Path(cfg.paths.output_dir) / "faithfulness.md") if cfg.faithfulness else None})


if __name__ == "__main__":
    main()
