"""Accuracy table from run folders: ``python -m sparsecbm.tables runs=[RUN_DIR_OR_PARENT,...] [out=docs/results/<date>-<topic>.md]``.

Finds every ``results.json`` below the given folders, groups runs by configuration (mode,
label-head input, sparsity scorer/granularity/final sparsity) and reports test task accuracy /
macro-F1 and concept accuracy / macro-F1 as mean ± std over seeds, with the number of seeds,
epochs and training examples/s; when the runs report them, task accuracy with the predicted concepts
as hard values, after setting every concept to its true value, the concept set's ceiling, the
leakage (soft - hard accuracy) and a hybrid bottleneck's residual share. Generated, never typed by hand.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparsecbm.errors import DataError, entry_point
from sparsecbm.results import fmt_mean_std, write_markdown
from sparsecbm.run_result import RunResult


def load_runs(paths: list[str]) -> list[RunResult]:
    """Every finished run (a ``results.json`` with test metrics) below ``paths``, as a :class:`RunResult`."""
    runs = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DataError(f"{p}: no such file or folder; expected run folders, their parents or results.json files")
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        for f in files:
            try:
                d = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{f}: not a readable results.json ({e}); was its run interrupted? "
                                "delete it or re-run that job") from None
            if not isinstance(d, dict):
                raise DataError(f"{f}: not a results.json of sparsecbm (it holds {json.dumps(d)[:40]}, expected a JSON "
                                "object with run, config and test); delete it or re-run that job")
            if "test" in d and "run" in d and "config" in d:
                runs.append(RunResult.from_dict(d, f.parent))
    return runs


def config_key(r: RunResult) -> str:
    m = r.model
    name = m["mode"] if m["mode"] == "standard" else f"{m['mode']} CBM ({m.get('activation')})"
    sub = r.subnetworks
    if sub:
        name = f"SparseCBM {sub['scorer']}/{sub['granularity']} @ {sub['target_sparsity']:.1f}"
        layers = (r.config.get("sparsity") or {}).get("masked_layers")
        if layers:
            name += f" (blocks {','.join(str(b) for b in sub.get('masked_blocks', layers))})"
        if m.get("activation") not in (None, "logits"):
            name += f" ({m['activation']})"
    extras = []
    cbm = r.config.get("cbm", {})
    if cbm.get("train_intervention_prob"):
        extras.append(f"train interventions {cbm['train_intervention_prob']}")
    if cbm.get("prototype_prob"):
        extras.append(f"prototypes {cbm['prototype_prob']}")
    if cbm.get("tokens") not in (None, "none"):
        extras.append("concept attention" if cbm["tokens"] == "attention" else "token gates")
    if m.get("activation") == "embedding" and cbm.get("embedding_dim"):
        extras.append(f"embedding dim {cbm['embedding_dim']}")
    if cbm.get("residual_dim"):
        drop = f", drop {cbm['residual_drop_prob']}" if cbm.get("residual_drop_prob") else ""
        extras.append(f"residual {cbm['residual_dim']}{drop}")
    if m.get("label_head") == "mlp" and m["mode"] != "standard":
        extras.append("MLP label head")
    if cbm.get("concept_loss_weight") not in (None, 1, 1.0) and m["mode"] != "standard":
        extras.append(f"concept weight {cbm['concept_loss_weight']:g}")
    if cbm.get("concept_class_weight") not in (None, "none"):
        extras.append(f"{cbm['concept_class_weight']} concept loss")
    if cbm.get("label_class_weight") not in (None, "none"):
        extras.append(f"{cbm['label_class_weight']} label loss")
    if cbm.get("label_sparsity") not in (None, "none"):
        extras.append(f"label {cbm['label_sparsity']}")
    return name + (f" [{', '.join(extras)}]" if extras else "")


def subnetwork_stats(r: RunResult) -> tuple[float, float] | None:
    """(realised sparsity averaged over concepts, mean pairwise Jaccard of concept masks over pairs and layers)."""
    sub = r.subnetworks
    if not sub or not sub.get("concepts"):
        return None
    sparsity = statistics.mean(c["sparsity"] for c in sub["concepts"].values())
    overlaps = [v for per_layer in (sub.get("jaccard") or {}).values() for v in per_layer.values()]
    return sparsity, statistics.mean(overlaps) if overlaps else float("nan")


def group_runs(runs: list[RunResult], by_data: bool = False) -> dict[tuple, list[RunResult]]:
    """Runs grouped by ([data name,] configuration, epochs): the seeds of one table row."""
    groups: dict[tuple, list[RunResult]] = {}
    for r in runs:
        key = (config_key(r), int(r.run.get("epochs") or 0))
        groups.setdefault(((r.data.get("name", "?"),) if by_data else ()) + key, []).append(r)
    return groups


def collect(rs: list[RunResult], value: str | Callable[[RunResult], Any]) -> list[Any]:
    """Each run's ``value`` (a metric name for :meth:`RunResult.find`, e.g. ``test/label/acc``, or a function
    of the run), for the runs that report it."""
    get = value if callable(value) else (lambda r: r.find(value))
    return [x for x in map(get, rs) if x is not None]


def _paths(runs: list[RunResult]) -> str:
    return ", ".join(sorted(str(r.path) for r in runs))


def papers_f1_table(groups: dict[tuple, list[RunResult]]) -> list[str]:
    """Rows with the SparseCBM / C3M papers' "macro F1" (``f1_papers``, see ``sparsecbm.metrics``), when
    the runs report it: a separate, labelled table, so that it is never read as the standard macro-F1."""
    rows = [(key, epochs, rs) for (key, epochs), rs in groups.items() if collect(rs, "test/label/f1_papers")]
    if not rows:
        return []
    lines = ["", "The papers' \"macro F1\" (each class scored against the rest, the F1 of both sides averaged; "
             "higher than the macro-F1 above), to put beside the SparseCBM / C3M tables:", "",
             "| configuration | seeds | epochs | test task macro-F1 (papers' def.) | test concept macro-F1 (papers' def.) |",
             "|---|---|---|---|---|"]
    for key, epochs, rs in rows:
        lines.append(f"| {key} | {len(rs)} | {epochs} | {fmt_mean_std(collect(rs, 'test/label/f1_papers'))} | "
                     f"{fmt_mean_std(collect(rs, 'test/concept/f1_papers'))} |")
    return lines


def table(runs: list[RunResult]) -> str:
    groups = group_runs(runs)
    lines = ["| configuration | seeds | epochs | test task acc | test task macro-F1 | test concept acc | "
             "test concept macro-F1 | realised sparsity | mask Jaccard | acc hard concepts | acc all GT | "
             "ceiling acc | leakage (pts) | residual share | train ex/s | wall (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (key, epochs), rs in groups.items():
        eps = collect(rs, lambda r: r.run.get("train_examples_per_s"))
        wall = collect(rs, lambda r: r.run.get("wall_time_s"))
        stats = [s for s in map(subnetwork_stats, rs) if s]
        sparsity = f"{100 * statistics.mean(s[0] for s in stats):.1f}" if stats else "-"
        jaccard = f"{statistics.mean(s[1] for s in stats):.2f}" if stats else "-"
        lines.append(
            f"| {key} | {len(rs)} | {epochs} | {fmt_mean_std(collect(rs, 'test/label/acc'))} | "
            f"{fmt_mean_std(collect(rs, 'test/label/f1'))} | {fmt_mean_std(collect(rs, 'test/concept/acc'))} | "
            f"{fmt_mean_std(collect(rs, 'test/concept/f1'))} | {sparsity} | {jaccard} | "
            f"{fmt_mean_std(collect(rs, 'test/bottleneck/hard/acc'))} | "
            f"{fmt_mean_std(collect(rs, 'test/intervention/all_ground_truth/acc'))} | "
            f"{fmt_mean_std(collect(rs, 'test/bottleneck/ceiling/acc'))} | {fmt_mean_std(collect(rs, 'test/bottleneck/leakage/acc'))} | "
            f"{fmt_mean_std(collect(rs, 'test/bottleneck/residual/share'))} | {statistics.mean(eps):.1f} | "
            f"{statistics.mean(wall) / 60:.1f} |"
        )
    lines += papers_f1_table(groups)
    ref = next((r.reference for r in runs if r.reference.get("true_concept_logreg")), None)
    if ref:
        t = ref["true_concept_logreg"]
        lines += ["", f"Reference on the same data: logistic regression on one-hot *true* concepts: test acc "
                      f"{100 * t['test_acc']:.1f}, macro-F1 {100 * t['test_f1']:.1f}; majority class acc "
                      f"{100 * ref['majority_class']['test_acc']:.1f}."]
        if "true_concept_lookup" in ref:
            t = ref["true_concept_lookup"]
            lines[-1] += (f" Best function of the true concepts (majority label per combination): test acc "
                          f"{100 * t['test_acc']:.1f}, macro-F1 {100 * t['test_f1']:.1f}.")
        lines += ["", "*acc hard concepts*: the label head reading the predicted concept values as hard choices; "
                      "*acc all GT*: every concept set to its true value; *ceiling*: logistic regression on the "
                      "true concepts; *leakage*: test acc minus acc hard concepts (what soft activations carry "
                      "beyond the concept values); *residual share*: a hybrid bottleneck's share of the decision."]
    lines += ["", "Runs: " + _paths(runs)]
    return "\n".join(lines) + "\n"


def bottleneck_table(runs: list[RunResult]) -> str:
    """The accuracy-vs-interpretability table: per data set and configuration, task and concept metrics,
    the concept set's ceiling, the task with hard predicted concepts, after full ground-truth
    intervention, the leakage, and a hybrid's residual share (``--kind bottleneck``)."""
    groups = group_runs(runs, by_data=True)
    lines = ["| data | configuration | seeds | epochs | task acc | task macro-F1 | concept acc | concept macro-F1 | "
             "ceiling acc / F1 | acc hard concepts | acc all GT | GT gain (pts) | leakage (pts) | "
             "above ceiling (F1 pts) | residual share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (data, key, epochs), rs in sorted(groups.items(), key=lambda kv: kv[0][0]):
        def get(*path, rs=rs):
            return fmt_mean_std(collect(rs, "/".join(("test", *path))))

        # embeddings: the value-only figures (the chosen value's prototype, not the review's own embedding)
        value_only = any(r.find("test/bottleneck/hard_value_only") for r in rs)
        hard = get("bottleneck", "hard_value_only", "acc") + " (value-only)" if value_only else get("bottleneck", "hard", "acc")
        leak = get("bottleneck", "leakage_value_only", "acc") + " (value-only)" if value_only else get("bottleneck", "leakage", "acc")
        # per run: accuracy with every concept set to its true value minus the accuracy as predicted
        gains = [gt - acc for r in rs if (gt := r.find("test/intervention/all_ground_truth/acc")) is not None
                 and (acc := r.find("test/label/acc")) is not None]
        lines.append(
            f"| {data} | {key} | {len(rs)} | {epochs} | {get('label', 'acc')} | {get('label', 'f1')} | "
            f"{get('concept', 'acc')} | {get('concept', 'f1')} | {get('bottleneck', 'ceiling', 'acc')} / "
            f"{get('bottleneck', 'ceiling', 'f1')} | {hard} | {get('intervention', 'all_ground_truth', 'acc')} | "
            f"{fmt_mean_std(gains)} | {leak} | {get('bottleneck', 'above_ceiling', 'f1')} | "
            f"{get('bottleneck', 'residual', 'share')} |"
        )
    lines += ["", "*ceiling*: logistic regression on the one-hot *true* concepts of train, evaluated on test; "
                  "*acc hard concepts*: the label head reading the predicted concept values as hard choices "
                  "(value-only: concept embeddings replaced by each value's prototype, its mean embedding, so nothing of the "
                  "review passes beyond the values); *acc all GT*: every concept set to its true value; *GT gain*: acc all "
                  "GT minus task acc, per run; *leakage*: task acc minus acc hard concepts; *above ceiling*: task "
                  "macro-F1 minus the ceiling's (positive: the model uses information the true concepts do not "
                  "hold); *residual share*: a hybrid bottleneck's share "
                  "of the decision.", "", "Runs: " + _paths(runs)]
    return "\n".join(lines) + "\n"


USAGE = """usage: python -m sparsecbm.tables runs=[DIR,...] [out=FILE.md] [kind=accuracy|bottleneck] [title=TEXT]
  (or bash run.sh tables ...)  Finds every results.json below the run folders and prints a markdown table.
  runs   run folders, their parents or results.json files (one path or a list)
  out    also write the table to this file (not a folder), e.g. docs/results/<date>-<topic>.md
  kind   accuracy (the full table) | bottleneck (ceiling / hard / GT / leakage per data set)
  title  the table's heading (default: Results)
"""


@entry_point
def main() -> None:
    import sys

    from sparsecbm.keyvalue import compose_options, legacy_argv

    argv = legacy_argv(sys.argv[1:], "runs", {"--out": "out", "--title": "title", "--kind": "kind"}, many=True)
    cfg = compose_options("tables", argv, USAGE)
    paths = [str(p) for p in ([cfg.runs] if isinstance(cfg.runs, str) else cfg.runs)]
    runs = load_runs(paths)
    if not runs:
        raise DataError(f"no results.json with test metrics under {paths}; expected the folders of "
                        "finished train / evaluate runs")
    md = f"# {cfg.title}\n\nGenerated by `python -m sparsecbm.tables runs=[{','.join(paths)}]`.\n\n" + (
        bottleneck_table(runs) if cfg.kind == "bottleneck" else table(runs))
    write_markdown(md, cfg.out)
    print(md)


if __name__ == "__main__":
    main()
