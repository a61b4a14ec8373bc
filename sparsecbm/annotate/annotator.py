"""Machine concept annotation of a data folder: the concept bank scored against every sentence, values
decided per concept, graded copies from score quantiles; writes a folder ``data=annotated`` reads.

Example:
    >>> from sparsecbm.annotate import annotate_folder, load_bank
    >>> result = annotate_folder("../shared/data/cebab", load_bank("cebab"), "outputs/cebab_annotated",
    ...                          text_column="description", label={"column": "review_majority", ...})
    >>> result.agreement["test"]["food"]["macro_f1"]
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparsecbm.annotate.bank import ConceptBank
from sparsecbm.annotate.embed import SentenceEmbedder
from sparsecbm.annotate.scoring import (
    CALIBRATORS,
    CROSSFIT_FOLDS,
    ConceptScores,
    Decision,
    calibrate_threshold,
    crossfit,
    default_rule,
    grade,
    grade_edges,
    near_duplicate_groups,
    score_texts,
    subset_scores,
)
from sparsecbm.concepts import ConceptSpec
from sparsecbm.data.loading import SPLITS, DataError, _cell, _read_local
from sparsecbm.data.schema import FolderSchema
from sparsecbm.errors import ConfigError

log = logging.getLogger(__name__)
MACHINE_PREFIX = "machine_"


CALIBRATIONS = ("threshold", "logreg", "probe")


def agreement(human: Sequence[int], machine: Sequence[int], n_values: int) -> dict[str, float]:
    """Accuracy, macro-F1 (:mod:`sparsecbm.metrics`, the definition every other figure uses: a value absent
    from both sides is left out of the mean) and Cohen's kappa of machine against human value indices."""
    from sklearn.metrics import cohen_kappa_score

    from sparsecbm.metrics import accuracy, macro_f1

    human, machine = np.asarray(human), np.asarray(machine)
    if not len(human):
        return {"n": 0, "accuracy": float("nan"), "macro_f1": float("nan"), "kappa": float("nan")}
    return {"n": int(len(human)), "accuracy": accuracy(machine, human, n_values),
            "macro_f1": macro_f1(machine, human, n_values), "kappa": float(cohen_kappa_score(human, machine))}


def check_split(option: str, split: str, allowed: Sequence[str] = ("train", "dev")) -> str:
    """``split`` if ``option`` may use it; a :class:`ConfigError` for the test split (fitting or ranking on it
    would make every test figure in-sample, as ``optimized_metric=test/...`` is refused) or an unknown one."""
    if split == "test":
        raise ConfigError(f"{option}=test is refused: the test split must stay unseen (its agreement and ceiling "
                          f"figures would be in-sample); use {option}=dev")
    if split not in allowed:
        raise ConfigError(f"{option}='{split}' is not valid; expected one of {list(allowed)}")
    return split


@dataclass
class AnnotationResult:
    """What :func:`annotate_folder` wrote and measured (``annotation.json``)."""

    out_dir: str
    provenance: dict[str, Any]
    decisions: dict[str, dict[str, Any]]
    grades: dict[str, list[float]]
    agreement: dict[str, dict[str, dict[str, float]]]
    sizes: dict[str, int]
    seconds: float
    schema: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("out_dir", "provenance", "decisions", "grades", "agreement", "sizes",
                                              "seconds")}

    def save(self, path: str | Path) -> Path:
        from sparsecbm.results import write_json

        return write_json(path, self.to_dict())

    def table(self):
        from rich.table import Table

        p = self.provenance
        split, folds = p.get("calibration_split"), p.get("calibration_split_crossfit_folds")
        how = (f"calibrated on {split}; {split} values cross-fitted, {folds} folds, near-duplicate texts in one fold"
               if folds else
               f"calibrated on {split}; {split} values IN-SAMPLE" if split else "no calibration")
        t = Table(title=f"machine vs human concept labels ({how})" if self.agreement else
                  "no bank concept has human labels in this data (human_column): no agreement to report")
        for col in ("concept", "split", "n", "accuracy", "macro-F1", "kappa"):
            t.add_column(col)
        for split, per in self.agreement.items():
            for name, a in per.items():
                t.add_row(name, split, str(a["n"]), f"{100 * a['accuracy']:.1f}", f"{100 * a['macro_f1']:.1f}",
                          f"{a['kappa']:.3f}")
        return t


def read_split_rows(root: Path, files: Mapping[str, str]) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    return {s: _read_local(root / files[s]) for s in SPLITS}


def read_checked(root: Path, files: Mapping[str, str] | None, text_column: str,
                 label: Mapping[str, Any]) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """Every split's ``(columns, rows)``; a split without the text or label column raises :class:`DataError`."""
    files = dict(files or {s: f"{s}.csv" for s in SPLITS})
    data = read_split_rows(root, files)
    for split, (columns, _rows) in data.items():
        missing = [c for c in (text_column, label["column"]) if c not in columns]
        if missing:
            raise DataError(f"{root / files[split]}: missing column(s) {missing}; the file has columns {columns}. "
                            "Check data.text_column and data.label.column.")
    return data


def human_indices(rows: Sequence[Mapping[str, Any]], spec: ConceptSpec, names: Sequence[str]) -> np.ndarray:
    """Human labels of ``spec`` as indices into ``names`` (a bank concept's values + unknown); -1 where the
    human value has no bank counterpart."""
    out_idx = []
    for r in rows:
        try:
            v = spec.values[spec.index(_cell(r[spec.column]))]
        except KeyError:
            v = None
        out_idx.append(list(names).index(v) if v in names else -1)
    return np.asarray(out_idx)


def check_human_values(bank: ConceptBank, by_column: Mapping[str, ConceptSpec]) -> None:
    for c in bank.concepts:
        spec = by_column.get(c.human_column or "")
        bad = [v for v in c.values if spec is not None and v not in spec.values]
        if bad:
            raise DataError(f"{bank.source}, concept '{c.name}': value(s) {bad} are not values {list(spec.values)} "
                            f"of the human column '{spec.column}'")


def annotate_folder(
    root: str | Path,
    bank: ConceptBank,
    out_dir: str | Path,
    text_column: str,
    label: Mapping[str, Any],
    human: Sequence[ConceptSpec] = (),
    files: Mapping[str, str] | None = None,
    embedder: SentenceEmbedder | None = None,
    calibration: str = "threshold",
    calibration_split: str = "dev",
    default_tau: float = 0.5,
    language: str = "en",
    scores_out: dict[str, dict[str, ConceptScores]] | None = None,
) -> AnnotationResult:
    """Annotate ``root``'s train/dev/test files with ``bank``'s concepts and write ``out_dir``.

    Args:
        root: Folder with the split files.
        bank: The concept bank.
        out_dir: Where ``{train,dev,test}.csv``, ``concepts.yaml`` and ``annotation.json`` go.
        text_column: Column with the text.
        label: ``{column, values, skip}`` (kept as is in ``concepts.yaml``).
        human: Human concepts of the data (kept as concepts); a bank concept whose ``human_column`` is one
            of their columns is calibrated on, and compared with, those labels.
        files: File per split.
        embedder: Sentence embedder (default: MiniLM, no cache).
        calibration: ``threshold`` (tau + bias by grid search), ``logreg`` (on the similarity scores) or
            ``probe`` (a linear probe on the sentence embeddings, :func:`~sparsecbm.annotate.scoring.calibrate_probe`).
        calibration_split: The labelled split thresholds are calibrated on (``train`` or ``dev``; ``test`` is
            refused). Its own rows are cross-fitted (:func:`~sparsecbm.annotate.scoring.crossfit`), so its
            agreement is out-of-sample.
        default_tau: Threshold for concepts without human labels when none was calibrated.
        language: Sentence-splitting language.
        scores_out: If given, filled with the scores per split (for concept discovery).
    """
    start = time.perf_counter()
    root, out = Path(root).expanduser(), Path(out_dir).expanduser()
    embedder = embedder or SentenceEmbedder()
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"calibration='{calibration}' is not valid; expected one of {list(CALIBRATIONS)}")
    check_split("calibration_split", calibration_split)
    data = read_checked(root, files, text_column, label)
    human = [h for h in human if all(h.column in data[s][0] for s in SPLITS)]
    by_column = {h.column: h for h in human}
    check_human_values(bank, by_column)
    texts = {s: [_cell(r[text_column]) for r in rows] for s, (_, rows) in data.items()}
    scores = {}
    for s in SPLITS:  # the long part (sentence embeddings): the embedder logs its own progress lines
        log.info("annotate: scoring the %s split (%d texts, %d concepts)", s, len(texts[s]), len(bank.concepts))
        scores[s] = score_texts(texts[s], bank, embedder, language)
    if scores_out is not None:
        scores_out.update(scores)

    decisions: dict[str, Decision] = {}
    held_out: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # concept -> (labelled rows, cross-fitted values)
    folds_used = []
    # an edited copy of a text stays in its fold; groups small enough for CROSSFIT_FOLDS balanced folds
    groups, dup_threshold = near_duplicate_groups(texts[calibration_split],
                                                  max_group=len(texts[calibration_split]) // CROSSFIT_FOLDS)
    for c in bank.concepts:
        spec = by_column.get(c.human_column or "")
        if spec is None:
            continue
        y = human_indices(data[calibration_split][1], spec, list(c.values) + [bank.unknown])
        keep = y >= 0
        sc = subset_scores(scores[calibration_split][c.name], keep)
        thr = calibrate_threshold(sc, y[keep])
        d = thr if calibration == "threshold" else CALIBRATORS[calibration](sc, y[keep], groups=groups[keep])
        crossfitted, k = crossfit(calibration, sc, y[keep], d, groups=groups[keep])
        held_out[c.name] = (np.flatnonzero(keep), crossfitted)
        folds_used.append(k)
        d.calibration.update({"split": calibration_split, "rows": int(keep.sum()), "threshold_tau": thr.tau,
                              "crossfit_folds": k})
        decisions[c.name] = d
    calibrated = list(decisions.values())
    for c in bank.concepts:
        if c.name not in decisions:
            decisions[c.name] = default_rule(c, calibrated, default_tau)
    values = {c.name: {s: decisions[c.name].decide(scores[s][c.name]) for s in SPLITS} for c in bank.concepts}
    for name, (rows, crossfitted) in held_out.items():  # the calibration split's labelled rows: out-of-sample
        values[name][calibration_split][rows] = crossfitted
    polarity = {c.name: {s: scores[s][c.name].polarity(c.grade_by) for s in SPLITS} for c in bank.concepts if c.levels}
    provenance = {"annotator": "embedding", "model": embedder.name, "model_path": embedder.path,
                  "calibration": calibration, "calibration_split": calibration_split,
                  "calibration_split_crossfit_folds": min(folds_used) if folds_used else 0,
                  "calibration_split_text_groups": int(len(np.unique(groups))),
                  "near_duplicate_bigram_jaccard": dup_threshold,
                  "default_tau": default_tau, "language": language}
    return write_annotation(root, out, bank, data, text_column, label, human, values, polarity, provenance,
                            {k: d.to_dict() for k, d in decisions.items()}, start)


def write_annotation(root: Path, out: Path, bank: ConceptBank, data, text_column: str, label: Mapping[str, Any],
                     human: Sequence[ConceptSpec], values: Mapping[str, Mapping[str, np.ndarray]],
                     polarity: Mapping[str, Mapping[str, np.ndarray]], provenance: dict[str, Any],
                     decisions: dict[str, dict[str, Any]], start: float) -> AnnotationResult:
    """The annotated folder from per-concept value indices (``V`` = unknown) and graded scores: the split
    files (human columns kept, ``machine_*`` columns added), ``concepts.yaml`` and ``annotation.json``
    (agreement with every human-labelled concept, per split). Shared by every annotator."""
    by_column = {h.column: h for h in human}
    header = data["train"][0]
    machine: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    grades: dict[str, list[float]] = {}
    concepts_schema: list[dict[str, Any]] = [
        {"name": h.name, "column": h.column, "values": list(h.values), "aliases": dict(h.aliases),
         **({"ordered": True, "unordered": list(h.unordered)} if h.ordered else {})} for h in human]
    sources = {h.name: "human" for h in human}
    agree: dict[str, dict[str, dict[str, float]]] = {s: {} for s in SPLITS}
    taken = set(header)
    for c in bank.concepts:
        names = list(c.values) + [bank.unknown]
        column = _free(f"{MACHINE_PREFIX}{c.name}", taken)
        v = values[c.name]
        for s in SPLITS:
            machine[s][column] = [names[i] for i in v[s]]
        spec = by_column.get(c.human_column or "")
        if spec is None:  # no human labels: the machine concept stands in
            name = _free(c.name, {e["name"] for e in concepts_schema})
            concepts_schema.append({"name": name, "column": column, "values": names, "description": c.description})
            sources[name] = "machine"
        else:
            for s in SPLITS:
                y = human_indices(data[s][1], spec, names)
                keep = y >= 0
                agree[s][spec.name] = agreement(y[keep], np.asarray(v[s])[keep], len(names))
        if c.levels:
            unknown_idx = len(c.values)
            pol = polarity[c.name]
            edges = grade_edges(pol["train"][np.asarray(v["train"]) != unknown_idx], c.levels)
            grades[c.name] = edges
            level_names = [str(i + 1) for i in range(c.levels)] + [bank.unknown]
            gname = _free(f"{c.name}_grade", {e["name"] for e in concepts_schema})
            gcolumn = _free(f"{MACHINE_PREFIX}{c.name}_grade", taken)
            for s in SPLITS:
                lv = grade(pol[s], np.asarray(v[s]) != unknown_idx, edges)
                machine[s][gcolumn] = [level_names[i] for i in lv]
            concepts_schema.append({"name": gname, "column": gcolumn, "values": level_names, "ordered": True,
                                    "unordered": [bank.unknown],
                                    "description": f"{c.description} ({c.levels} levels, low to high)"})
            sources[gname] = "machine"

    out.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        columns, rows = data[s]
        extra = list(machine[s])
        with open(out / f"{s}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(columns + extra)
            for i, r in enumerate(rows):
                w.writerow([_cell(r[c]) for c in columns] + [machine[s][c][i] for c in extra])
    provenance = {**provenance, "bank": bank.name, "bank_file": bank.source, "bank_sha256": bank.digest(),
                  "source": str(root)}
    schema = FolderSchema(text_column=text_column, label=dict(label), concepts=concepts_schema, sources=sources,
                          files={s: f"{s}.csv" for s in SPLITS},
                          extra={"name": f"{root.name}+{bank.name}",
                                 "annotation": {"bank": bank.name, "bank_sha256": bank.digest(),
                                                "model": provenance.get("model")}})
    schema.save(out)
    result = AnnotationResult(
        out_dir=str(out), provenance=provenance, decisions=decisions,
        grades=grades, agreement={s: a for s, a in agree.items() if a},
        sizes={s: len(data[s][1]) for s in SPLITS}, seconds=time.perf_counter() - start, schema=schema.to_dict())
    result.save(out / "annotation.json")
    log.info("annotation written to %s (%.0f s)", out, result.seconds)
    return result


def _free(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... when it is taken (a column already in the data)."""
    out, i = name, 2
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def summary(result: AnnotationResult) -> str:
    return json.dumps(result.agreement, indent=1)
