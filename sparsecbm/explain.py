"""Explain a checkpoint's predictions: ``python -m sparsecbm.explain ckpt_path=... text="..."``.

Or on a data split: ``python -m sparsecbm.explain ckpt_path=... split=test n=50 [data=cebab] [data.root=DIR]``.
Writes ``explanations.json``, ``report.html`` and PNGs into the run folder; with
``faithfulness=true`` also ``faithfulness.json`` and ``faithfulness.md`` comparing ``methods``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sparsecbm.config import check_split, hydra_entry_point
from sparsecbm.errors import ConfigError
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
    split = check_split(cfg.split)
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    raw, out, seen = dm.raw[split], [], 0
    for batch in dm.loader(split, batch_size=int(cfg.batch_size)):
        take = min(len(batch["label"]), int(cfg.n) - seen)
        batch = {k: v[:take] for k, v in batch.items()}
        width = int(batch["attention_mask"].sum(-1).max())  # right padding: drop all-pad columns
        batch = {k: (v[:, :width] if k in ("input_ids", "attention_mask") else v).to(session.device)
                 for k, v in batch.items()}
        out.append((batch, [raw.texts[int(i)] for i in batch["index"]]))
        seen += take
        if seen >= int(cfg.n):
            break
    return out


def batches_for(cfg: DictConfig, session) -> list[tuple[dict, list[str]]]:
    """``[(batch, texts)]`` for ``text=...`` or ``split=... n=...`` of an
    :class:`~sparsecbm.session.InferenceSession`."""
    return _text_batches(cfg, session) if cfg.get("text") else _data_batches(cfg, session)


def compare_faithfulness(
    session,
    batches,
    methods: list[str],
    options: dict,
    fractions,
    steps: int,
    concepts: str = "all",
    on_method=None,
) -> dict[str, dict[str, float]]:
    """Faithfulness summary and attribution seconds per (example, concept) pair of every method.

    ``concepts=all`` scores every concept of every example; ``round_robin`` scores example ``i`` on
    concept ``i mod K`` only (K times cheaper, every concept equally often).
    """
    if concepts not in ("all", "round_robin"):
        raise ConfigError(f"concepts='{concepts}' is not valid; expected all | round_robin")
    from sparsecbm.interpret.attribution import Tokens, get_method
    from sparsecbm.interpret.faithfulness import FaithfulnessScores, faithfulness

    model = session.model
    tokens = Tokens.from_tokenizer(session.tokenizer)
    n_concepts = len(model.concepts.names)
    jobs, seen = [], 0  # (sub-batch, concept)
    for batch, _ in batches:
        size = len(batch["input_ids"])
        for k in range(n_concepts):
            rows = (
                torch.arange(size)
                if concepts == "all"
                else torch.nonzero((torch.arange(size) + seen) % n_concepts == k).flatten()
            )
            if len(rows):
                jobs.append(({key: v[rows] for key, v in batch.items()}, k))
        seen += size
    table = {}
    for name in methods:
        method, scores, seconds = get_method(name, tokens, model, **options), FaithfulnessScores(), 0.0
        for batch, k in jobs:
            start = time.perf_counter()
            s = method.attribute(model, batch, k)
            seconds += time.perf_counter() - start
            scores.extend(faithfulness(model, batch, k, s, tokens, tuple(fractions), steps))
        key = f"ours ({method.name})" if name == "ours" else name
        summary = scores.summary()
        table[key] = {**summary, "seconds_per_pair": seconds / max(summary["n"], 1), "examples": seen}
        log.info("faithfulness %s: %s", key, table[key])
        if on_method is not None:
            on_method(table)
    return table


def markdown_table(table: dict[str, dict[str, float]], fractions) -> str:
    keys = [f"comp@{round(q * 100):g}%" for q in fractions] + [f"suff@{round(q * 100):g}%" for q in fractions]
    head = "| method | " + " | ".join(keys) + " | deletion AUC | s / (example, concept) |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for name, row in table.items():
        cells = " | ".join(f"{row[k]:.3f}" for k in keys)
        lines.append(f"| {name} | {cells} | {row['deletion_auc']:.3f} | {row['seconds_per_pair']:.3f} |")
    lines.append("")
    lines.append(
        "comprehensiveness: higher is better; sufficiency and deletion AUC: lower is better. "
        f"{next(iter(table.values()))['n']} (example, concept) pairs per method."
    )
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Explain (and optionally compare attribution methods); write the artefacts. Returns their paths and tables."""
    from sparsecbm.interpret.explainer import explain_batch, explanation_set
    from sparsecbm.interpret.report import write_pngs, write_report
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
    for batch, texts in batches if cfg.get("explanations", True) else []:
        es.explanations += explain_batch(session, batch, cfg.method, texts, **options)
        if hasattr(model.token_pooler, "kept_fraction"):  # token gates
            with torch.no_grad():
                extras = model.concept_outputs(batch["input_ids"], batch["attention_mask"]).pooler
            kept.append(model.token_pooler.kept_fraction(extras, batch["attention_mask"]).cpu())
    if kept:
        es.token_gates = {
            "budget": model.token_pooler.budget,
            "kept_fraction": float(torch.cat(kept, 1).mean()),
        }
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
            (out_dir / "faithfulness.md").write_text(markdown_table(table, cfg.fractions) + "\n")

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
    log.info("explanations written to %s", out_dir)
    return result


@hydra_entry_point("explain")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print(
        f"explanations: {result['explanations']}"
        + (f"\nreport: {result['report']}" if "report" in result else "")
    )


if __name__ == "__main__":
    main()
