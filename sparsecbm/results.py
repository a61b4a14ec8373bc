"""The parts of ``results.json`` (split metrics, reference baselines, the summary table); the whole file is
:class:`sparsecbm.run_result.RunResult`."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sparsecbm.jsonio import write_json  # noqa: F401  (re-exported: sparsecbm.results.write_json)


def split_metrics(metrics: Mapping[str, float], stage: str, concept_names: list[str]) -> dict[str, Any]:
    """``{"test/label/acc": ...}`` -> ``{"label": {"acc", "f1"}, "concept": {...}, "per_concept": {...}}``."""
    get = lambda k: float(metrics[k]) if k in metrics else None  # noqa: E731
    out: dict[str, Any] = {"label": {"acc": get(f"{stage}/label/acc"), "f1": get(f"{stage}/label/f1")}}
    if f"{stage}/label/f1_papers" in metrics:  # the SparseCBM / C3M papers' "macro F1" (see sparsecbm.metrics)
        out["label"]["f1_papers"] = get(f"{stage}/label/f1_papers")
    if f"{stage}/loss" in metrics:
        out["loss"] = get(f"{stage}/loss")
    if concept_names and f"{stage}/concept/acc" in metrics:
        out["concept"] = {"acc": get(f"{stage}/concept/acc"), "f1": get(f"{stage}/concept/f1")}
        if f"{stage}/concept/f1_papers" in metrics:
            out["concept"]["f1_papers"] = get(f"{stage}/concept/f1_papers")
        out["per_concept"] = {
            n: {"acc": get(f"{stage}/concept/{n}/acc"), "f1": get(f"{stage}/concept/{n}/f1"),
                **({"mae": get(f"{stage}/concept/{n}/mae")} if f"{stage}/concept/{n}/mae" in metrics else {})}
            for n in concept_names
        }
    if concept_names and f"{stage}/tokens_kept/{concept_names[0]}" in metrics:  # token gates
        out["tokens_kept"] = {n: get(f"{stage}/tokens_kept/{n}") for n in concept_names}
    return out


def check_optimized_metric(name: str, concept_names: list[str] | None = None) -> str:
    """Refuse an ``optimized_metric`` a sweep must not use: anything on the test split, or no such metric.

    Valid: ``val/label/<acc|f1|f1_papers>``, ``val/concept/<acc|f1|f1_papers>``, ``val/concept/<name>/<acc|f1>``,
    ``val/loss``. Checked before training, so a bad sweep fails in seconds rather than after its first job.
    """
    from sparsecbm.errors import ConfigError

    name = str(name)
    stage, *rest = name.split("/")
    if stage == "test":
        raise ConfigError(f"optimized_metric='{name}' is a test-split metric: a sweep tuned on it would report "
                          "an optimistic test score; use the validation split, e.g. optimized_metric=val/label/f1")
    concepts = list(concept_names or [])
    ok = stage == "val" and (
        rest == ["loss"]
        or (len(rest) == 2 and rest[0] in ("label", "concept") and rest[1] in ("acc", "f1", "f1_papers"))
        or (len(rest) == 3 and rest[0] == "concept" and rest[2] in ("acc", "f1")
            and (concept_names is None or rest[1] in concepts))
    )
    if not ok:
        raise ConfigError(
            f"optimized_metric='{name}' is not a validation metric of this run; expected val/label/acc, "
            "val/label/f1, val/concept/acc, val/concept/f1, val/loss or val/concept/<name>/<acc|f1>"
            + (f" with <name> one of {concepts}" if concepts else "")
        )
    return name


def reference_baselines(train_concepts, train_labels, test_concepts, test_labels, cardinalities, n_labels,
                        ceiling=None) -> dict:
    """What a strict bottleneck can reach at best on this data, to put a run beside.

    ``true_concept_logreg``: logistic regression from one-hot *true* concepts (train -> test);
    ``true_concept_lookup``: the majority train label of each combination of true concept values
    (see :class:`~sparsecbm.ceiling.ConceptCeiling`);
    ``majority_class``: always predict the most frequent training label.
    ``ceiling``: that ceiling already fitted on these training concepts (a run fits it once); else fitted here.
    """
    from sparsecbm.metrics import classification_scores

    def scores(pred) -> dict[str, float]:
        s = classification_scores(pred, test_labels, n_labels)
        return {"test_acc": s["acc"], "test_f1": s["f1"], "test_f1_papers": s["f1_papers"]}

    out: dict[str, Any] = {}
    majority = int(np.bincount(train_labels, minlength=n_labels).argmax())
    out["majority_class"] = scores(np.full(len(test_labels), majority))
    if cardinalities:
        if ceiling is None:
            from sparsecbm.ceiling import ConceptCeiling

            ceiling = ConceptCeiling.fit(train_concepts, train_labels, cardinalities, n_labels)
        out["true_concept_logreg"] = scores(ceiling.predict(test_concepts, "logreg"))
        out["true_concept_lookup"] = scores(ceiling.predict(test_concepts, "lookup"))
    return out


#: The summary table's short headers (it fits 80 columns) and what each means (printed as its legend).
SUMMARY_COLUMNS = {
    "split": "split",
    "acc": "task accuracy",
    "F1": "task macro-F1",
    "c.acc": "concept accuracy",
    "c.F1": "concept macro-F1",
    "hard": "task acc with the predicted concepts as hard values",
    "allGT": "task acc with every concept set to its true value",
    "ceil": "task acc of the best head on the true concepts",
    "leak": "soft - hard task acc in points (what the activations carry beyond the values)",
}


_ACTIVATIONS = {"logits": "concept logits", "probs": "concept probabilities", "hard": "hard concepts",
                "embedding": "concept embeddings"}


def cbm_title(cbm: Mapping[str, Any]) -> str:
    """The model's ``conf/cbm`` preset and what it is, from its ``cbm`` options, for headers: e.g.
    ``cem (joint, concept embeddings)``, ``strict (independent, hard concepts)``, ``standard (no concepts)``."""
    mode, activation = cbm.get("mode", "joint"), cbm.get("activation", "logits")
    if mode == "standard":
        return "standard (no concepts)"
    residual = int(cbm.get("residual_dim") or 0)
    name = ("cem" if activation == "embedding" else "hybrid" if residual else
            "strict" if (mode, activation) == ("independent", "hard") else mode)
    parts = ([mode] if name != mode else []) + [_ACTIVATIONS.get(activation, activation)]
    parts += [f"{residual}-dim residual"] if residual else []
    return f"{name} ({', '.join(parts)})"


def summary_table(results: Mapping[str, Any], title: str):
    """A rich table of task and concept metrics per split, with the ceiling / leakage figures, in %.

    Short headers and a legend (:data:`SUMMARY_COLUMNS`) keep it within 80 terminal columns.
    """
    from rich.table import Table

    table = Table(title=title, title_justify="left", caption_justify="left")
    for col in SUMMARY_COLUMNS:
        table.add_column(col, justify="right" if col != "split" else "left", no_wrap=True)
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
    legend = "; ".join(f"{k}: {v}" for k, v in SUMMARY_COLUMNS.items() if k != "split")
    lines = [legend]
    val = results.get("val") or {}
    if val and not val.get("bottleneck") and (results.get("test") or {}).get("bottleneck"):
        lines.append("-: not measured on val by training (its interventions cost another pass); "
                     "python -m sparsecbm.evaluate ckpt_path=<run>/checkpoints/best.ckpt fills them for dev")
    residual = ((results.get("test") or {}).get("bottleneck") or {}).get("residual")
    if residual:
        lines.append(f"hybrid bottleneck: residual share of the decision {100 * residual['share']:.0f}%, "
                     f"test acc with the residual at its mean {fmt(residual['without']['acc'])}")
    table.caption = "\n".join(lines)
    return table


def print_outputs(outputs: Mapping[str, Any]) -> None:
    """The files a command wrote, one ``what: path`` line each, last on stdout (every inference command ends
    this way, so a user always sees where to look)."""
    for what, path in outputs.items():
        if path:
            print(f"{what}: {path}", flush=True)


def fmt_mean_std(values: list[float]) -> str:
    """Mean ± std in % (just the mean for one value, `-` for none)."""
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def write_markdown(md: str, path: str | Path | None) -> None:
    """Write ``md`` to ``path`` (parents created) when a path is given."""
    if path:
        from sparsecbm.outputs import write_text

        write_text(path, md)
