"""results.json: what a run measured, in one structure shared by train and evaluate."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def split_metrics(metrics: Mapping[str, float], stage: str, concept_names: list[str]) -> dict[str, Any]:
    """``{"test/label/acc": ...}`` -> ``{"label": {"acc", "f1"}, "concept": {...}, "per_concept": {...}}``."""
    get = lambda k: float(metrics[k]) if k in metrics else None  # noqa: E731
    out: dict[str, Any] = {"label": {"acc": get(f"{stage}/label/acc"), "f1": get(f"{stage}/label/f1")}}
    if f"{stage}/loss" in metrics:
        out["loss"] = get(f"{stage}/loss")
    if concept_names and f"{stage}/concept/acc" in metrics:
        out["concept"] = {"acc": get(f"{stage}/concept/acc"), "f1": get(f"{stage}/concept/f1")}
        out["per_concept"] = {
            n: {"acc": get(f"{stage}/concept/{n}/acc"), "f1": get(f"{stage}/concept/{n}/f1"),
                **({"mae": get(f"{stage}/concept/{n}/mae")} if f"{stage}/concept/{n}/mae" in metrics else {})}
            for n in concept_names
        }
    if concept_names and f"{stage}/tokens_kept/{concept_names[0]}" in metrics:  # token gates
        out["tokens_kept"] = {n: get(f"{stage}/tokens_kept/{n}") for n in concept_names}
    return out


def metric_value(results: Mapping[str, Any], name: str) -> float:
    """A logged metric's value in a ``results.json`` structure: ``val/label/f1``, ``test/concept/acc``,
    ``val/concept/food/f1`` (per concept) or ``val/loss``."""
    stage, *rest = name.split("/")
    node: Any = results.get(stage)
    if len(rest) == 3 and rest[0] == "concept":
        rest = ["per_concept", rest[1], rest[2]]
    for part in rest:
        node = node.get(part) if isinstance(node, Mapping) else None
    if not isinstance(node, (int, float)):
        known = sorted(f"{s}/{k}/{m}" for s in ("val", "test") for k in ("label", "concept")
                       for m in ("acc", "f1") if isinstance((results.get(s) or {}).get(k), Mapping))
        raise KeyError(f"optimized_metric='{name}' is not in this run's results; known: {known} "
                       "(and <split>/concept/<name>/<acc|f1>, <split>/loss)")
    return float(node)


def reference_baselines(train_concepts, train_labels, test_concepts, test_labels, cardinalities, n_labels) -> dict:
    """What a strict bottleneck can reach at best on this data, to put a run beside.

    ``true_concept_logreg``: logistic regression from one-hot *true* concepts (train -> test);
    ``true_concept_lookup``: the majority train label of each combination of true concept values
    (see :class:`~sparsecbm.interpret.leakage.ConceptCeiling`);
    ``majority_class``: always predict the most frequent training label.
    """
    from sklearn.metrics import accuracy_score, f1_score

    def scores(pred) -> dict[str, float]:
        return {"test_acc": float(accuracy_score(test_labels, pred)),
                "test_f1": float(f1_score(test_labels, pred, average="macro", labels=list(range(n_labels))))}

    out: dict[str, Any] = {}
    majority = int(np.bincount(train_labels, minlength=n_labels).argmax())
    out["majority_class"] = scores(np.full(len(test_labels), majority))
    if cardinalities:
        from sparsecbm.interpret.leakage import ConceptCeiling

        ceiling = ConceptCeiling.fit(train_concepts, train_labels, cardinalities, n_labels)
        out["true_concept_logreg"] = scores(ceiling.predict(test_concepts, "logreg"))
        out["true_concept_lookup"] = scores(ceiling.predict(test_concepts, "lookup"))
    return out


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Atomic JSON write (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)
    return path


def summary_table(results: Mapping[str, Any], title: str):
    """A rich table of task and concept metrics per split, with the ceiling / leakage figures.

    ``hard``: task accuracy with the predicted concepts as hard values; ``all GT``: every concept set to
    its true value; ``ceiling``: the best label head on the true concepts; ``leakage``: soft - hard
    accuracy in points (what the soft activations carry beyond the concept values).
    """
    from rich.table import Table

    table = Table(title=title)
    cols = ("split", "task acc", "task macro-F1", "concept acc", "concept macro-F1", "acc hard concepts",
            "acc all GT", "ceiling acc", "leakage (pts)")
    for col in cols:
        table.add_column(col, justify="right" if col != "split" else "left")
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for split in ("val", "test"):
        r = results.get(split)
        if not r:
            continue
        c = r.get("concept", {})
        gt = (r.get("intervention") or {}).get("all_ground_truth", {})  # every concept set to its true value
        b = r.get("bottleneck") or {}
        leak = (b.get("leakage") or {}).get("acc")
        table.add_row(split, fmt(r["label"]["acc"]), fmt(r["label"]["f1"]), fmt(c.get("acc")), fmt(c.get("f1")),
                      fmt((b.get("hard") or {}).get("acc")), fmt(gt.get("acc")),
                      fmt((b.get("ceiling") or {}).get("acc")), "-" if leak is None else f"{100 * leak:+.1f}")
    residual = ((results.get("test") or {}).get("bottleneck") or {}).get("residual")
    if residual:
        table.caption = (f"hybrid bottleneck: residual share of the decision {100 * residual['share']:.0f}%, "
                         f"test acc with the residual at its mean {fmt(residual['without']['acc'])}")
    return table
