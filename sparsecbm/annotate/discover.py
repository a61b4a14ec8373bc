"""Concept discovery: propose candidate concepts from the training texts and rank every concept by how
much it raises the strict ceiling (``python -m sparsecbm.annotate ... discover=true``).

**Candidates** are class-distinctive sentence clusters. Every training sentence is embedded (the
annotator's sentence embedder, cached) and clustered with k-means; each cluster is split in two by a
second k-means, giving a candidate concept with two values (its two halves, named after the label
each leans to) plus ``unknown`` (no sentence of the text is in the cluster). A text's value is read
from its sentence nearest the cluster's centre. The candidates kept are the clusters whose value
tells most about the label: the highest mutual information I(value; label) on train, among clusters
present in at least ``min_support`` of the training texts.

**Ranking** is greedy forward selection on the strict ceiling
(:class:`~sparsecbm.interpret.leakage.ConceptCeiling`: a logistic regression from one-hot concept values
to the label, fitted on train): starting from no concept, each step adds the concept (a data concept of
the annotated folder, human or machine, or a candidate) whose addition gives the highest ceiling
macro-F1 on the ``split`` (dev), until ``max_concepts``.

Writes ``out/discovery/``: ``bank.yaml`` (the bank's concepts in rank order, then every candidate whose
gain was positive, with its example phrases; ready to edit and to pass as ``bank=PATH``),
``ranking.csv`` / ``ranking.md`` (step, concept, source, ceiling, gain) and ``discovery.json``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparsecbm.annotate.annotator import check_split
from sparsecbm.annotate.bank import BankConcept, ConceptBank
from sparsecbm.annotate.scoring import macro_f1_scorer
from sparsecbm.annotate.sentences import flatten_sentences, per_text_mean


@dataclass
class Candidate:
    """A proposed concept: two values (cluster halves; one when the cluster's sentences are all the same) with
    example phrases, and its value per text (``2`` = unknown)."""

    name: str
    description: str
    values: dict[str, list[str]]
    support: float
    mutual_information: float
    train: np.ndarray = field(repr=False)  # [N] value index, 2 = unknown
    split: np.ndarray = field(repr=False)

    def bank_concept(self) -> BankConcept:
        return BankConcept(self.name, self.description, {v: tuple(p) for v, p in self.values.items()})


@dataclass
class Step:
    step: int
    concept: str
    source: str  # human | machine | candidate
    ceiling_f1: float
    ceiling_acc: float
    gain_f1: float


@dataclass
class DiscoveryReport:
    steps: list[Step]
    baseline: dict[str, float]
    all_data_concepts: dict[str, float]
    candidates: list[dict[str, Any]]
    bank_file: str
    split: str
    embedding_bound: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "baseline": self.baseline, "all_data_concepts": self.all_data_concepts,
                "embedding_bound": self.embedding_bound,
                "steps": [asdict(s) for s in self.steps], "candidates": self.candidates, "bank_file": self.bank_file}

    def markdown(self) -> str:
        lines = [f"Greedy forward selection on the strict ceiling ({self.split} macro-F1; no concept: "
                 f"{100 * self.baseline['f1']:.1f}; every data concept: {100 * self.all_data_concepts['f1']:.1f})"]
        if self.embedding_bound:
            lines.append(f"Label read linearly from the annotator's own text embedding (no concepts): "
                         f"{100 * self.embedding_bound['f1']:.1f} macro-F1: concepts scored from these embeddings "
                         "rarely carry more about the label than this")
        lines += ["", "| step | concept | source | ceiling F1 | gain |", "|---|---|---|---|---|"]
        lines += [f"| {s.step} | {s.concept} | {s.source} | {100 * s.ceiling_f1:.1f} | {100 * s.gain_f1:+.1f} |"
                  for s in self.steps]
        return "\n".join(lines) + "\n"

    def table(self):
        from rich.table import Table

        t = Table(title=f"concepts by strict-ceiling gain ({self.split})")
        for col in ("step", "concept", "source", "ceiling F1", "gain"):
            t.add_column(col)
        for s in self.steps:
            t.add_row(str(s.step), s.concept, s.source, f"{100 * s.ceiling_f1:.1f}", f"{100 * s.gain_f1:+.1f}")
        return t


def _mutual_information(values: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import mutual_info_score

    return float(mutual_info_score(labels, values))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "x"


def _values_of(rows: np.ndarray, emb: np.ndarray, owner: np.ndarray, n: int, centre: np.ndarray,
               halves) -> np.ndarray:
    """Per text: the half (0/1) of its cluster sentence nearest the centre; 2 (unknown) when it has none."""
    out = np.full(n, 2)
    dist = ((emb[rows] - centre) ** 2).sum(1)
    half = halves.predict(emb[rows]) if halves is not None and len(rows) else np.zeros(len(rows), int)
    best: dict[int, tuple[float, int]] = {}
    for d, h, t in zip(dist, half, owner[rows]):
        if int(t) not in best or d < best[int(t)][0]:
            best[int(t)] = (float(d), int(h))
    for t, (_, h) in best.items():
        out[t] = h
    return out


def propose_candidates(train_texts: Sequence[str], train_labels: Sequence[int], split_texts: Sequence[str],
                       label_names: Sequence[str], embedder, clusters: int = 24, candidates: int = 12,
                       min_support: float = 0.02, phrases: int = 4, language: str = "en",
                       seed: int = 42) -> list[Candidate]:
    """Class-distinctive sentence clusters of the training texts as candidate concepts (module docstring)."""
    from sklearn.cluster import KMeans

    labels = np.asarray(train_labels)
    sent, owner = flatten_sentences(train_texts, language)
    S = embedder.embed(sent, "embedding training sentences (discovery)")
    k = min(clusters, len(set(sent)))
    km = KMeans(n_clusters=k, random_state=seed, n_init=4).fit(S)
    dev_sent, dev_owner = flatten_sentences(split_texts, language)
    D = embedder.embed(dev_sent, "embedding dev sentences (discovery)")
    dev_cluster = km.predict(D)
    found = []
    for c in range(k):
        idx = np.flatnonzero(km.labels_ == c)
        support = len(set(owner[idx].tolist())) / len(train_texts)
        if support < min_support:
            continue
        # two values (the cluster's halves); one (mentioned or not) when its sentences are all the same
        halves = (KMeans(n_clusters=2, random_state=seed, n_init=4).fit(S[idx])
                  if len(np.unique(S[idx].round(6), axis=0)) >= 2 else None)

        centre = km.cluster_centers_[c]
        train_v = _values_of(idx, S, owner, len(train_texts), centre, halves)
        split_v = _values_of(np.flatnonzero(dev_cluster == c), D, dev_owner, len(split_texts), centre, halves)
        names, examples = [], {}
        for h in (0, 1) if halves is not None else (0,):
            members = idx[halves.labels_ == h] if halves is not None else idx
            rows = labels[train_v == h]
            lean = (np.bincount(rows, minlength=len(label_names)) / max(len(rows), 1)
                    / np.maximum(np.bincount(labels, minlength=len(label_names)) / len(labels), 1e-9))
            name = f"leans_{_slug(label_names[int(lean.argmax())])}"
            names.append(name if name not in names else f"{name}_b")
            centre = halves.cluster_centers_[h] if halves is not None else km.cluster_centers_[c]
            order = members[np.argsort(((S[members] - centre) ** 2).sum(1))] if len(members) else members
            picked = list(dict.fromkeys(sent[i][:200] for i in order))[:phrases]
            examples[names[-1]] = picked
        nearest = sent[idx[np.argmin(((S[idx] - km.cluster_centers_[c]) ** 2).sum(1))]]
        found.append(Candidate(f"candidate_{c}", f"what the text says in sentences like: {nearest[:120]!r}",
                               examples, support, _mutual_information(train_v, labels), train_v, split_v))
    found.sort(key=lambda x: (-x.mutual_information, x.name))
    return found[:candidates]


def _recode(values: np.ndarray, n_values: int) -> np.ndarray:
    """Value indices with unknown (2) moved to ``n_values`` (1 for a one-valued candidate)."""
    return np.where(values == 2, n_values, values)


def _ceiling(train_c: np.ndarray, train_y: np.ndarray, split_c: np.ndarray, split_y: np.ndarray,
             cards: list[int], n_labels: int) -> dict[str, float]:
    from sparsecbm.ceiling import ConceptCeiling, metrics

    if not cards:  # no concept: the majority training label
        majority = np.bincount(train_y, minlength=n_labels).argmax()
        return metrics(np.full(len(split_y), majority), split_y, n_labels)
    return ConceptCeiling.fit(train_c, train_y, cards, n_labels).evaluate(split_c, split_y)["logreg"]


def embedding_bound(train_texts: Sequence[str], train_y: np.ndarray, split_texts: Sequence[str],
                    split_y: np.ndarray, embedder, n_labels: int, language: str = "en",
                    Cs: Sequence[float] = (0.01, 0.1, 1.0), seed: int = 0) -> dict[str, float]:
    """How much the annotator's embeddings know of the label: a logistic regression from each text's mean
    sentence embedding to the label (standardised, class-balanced, ``C`` by 5-fold CV on train), fitted on
    train and measured on the split. Concepts computed from those embeddings (similarities, linear
    probes) pass the label less information than the embedding itself, so a strict ceiling far below the
    black box with this number close to the ceiling means the *annotator* is the limit, not the bank."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sparsecbm.interpret.leakage import metrics

    def mean_embeddings(texts: Sequence[str]) -> np.ndarray:
        sentences, owner = flatten_sentences(texts, language)
        return per_text_mean(embedder.embed(sentences, "embedding sentences"), owner, len(texts))

    if len(np.unique(train_y)) < 2:
        return {}
    X, Xs = mean_embeddings(train_texts), mean_embeddings(split_texts)

    def model(C: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=3000))

    counts = np.bincount(train_y)
    k = int(min(5, counts[counts > 0].min()))  # folds: at most the size of the rarest label
    C = float(Cs[0])
    if k >= 2:
        cv = StratifiedKFold(k, shuffle=True, random_state=seed)
        C = float(Cs[int(np.argmax([cross_val_score(model(c), X, train_y, cv=cv, scoring=macro_f1_scorer()).mean()
                                     for c in Cs]))])
    out = metrics(model(C).fit(X, train_y).predict(Xs), split_y, n_labels)
    return {**{k_: float(v) for k_, v in out.items()}, "C": C}


def greedy_selection(pool: list[tuple[str, str, np.ndarray, np.ndarray, int]], train_y: np.ndarray,
                     split_y: np.ndarray, n_labels: int, max_concepts: int = 20) -> tuple[list[Step], dict]:
    """Forward selection over ``pool`` (name, source, train values, split values, cardinality) by the
    ceiling's macro-F1 on the split; ties keep pool order. Returns the steps and the empty-set baseline."""
    chosen: list[int] = []
    base = _ceiling(np.zeros((len(train_y), 0), int), train_y, np.zeros((len(split_y), 0), int), split_y, [], n_labels)
    current, steps = base["f1"], []
    while len(chosen) < min(max_concepts, len(pool)):
        best = None
        for j in range(len(pool)):
            if j in chosen:
                continue
            sel = chosen + [j]
            m = _ceiling(np.stack([pool[i][2] for i in sel], 1), train_y, np.stack([pool[i][3] for i in sel], 1),
                         split_y, [pool[i][4] for i in sel], n_labels)
            if best is None or m["f1"] > best[1]["f1"] + 1e-12:
                best = (j, m)
        j, m = best
        chosen.append(j)
        steps.append(Step(len(chosen), pool[j][0], pool[j][1], m["f1"], m["acc"], m["f1"] - current))
        current = m["f1"]
    return steps, base


def discover(folder: str | Path, bank: ConceptBank, embedder, clusters: int = 24, candidates: int = 12,
             min_support: float = 0.02, phrases: int = 4, max_concepts: int = 20, split: str = "dev",
             language: str = "en", seed: int = 42) -> DiscoveryReport:
    """Propose candidates from ``folder``'s training texts and rank them with the folder's concepts.

    Args:
        folder: An annotated folder (with ``concepts.yaml``; :func:`~sparsecbm.annotate.annotate_folder`'s output).
        bank: The bank it was annotated with (its concepts head the written bank, in rank order).
        embedder: Sentence embedder for the candidate clusters.
        split: The split the ceiling gain is measured on (``train`` or ``dev``; ``test`` is refused).
    """
    check_split("discovery.split", split)
    from sparsecbm.data.loading import load_splits
    from sparsecbm.data.schema import read_schema
    from sparsecbm.results import write_json

    folder = Path(folder)
    schema = read_schema(folder)
    cs = schema.concept_set()
    data = load_splits(cs, schema.text_column, root=str(folder), files=schema.files)
    train, held = data["train"], data[split]
    train_y, split_y = np.asarray(train.labels), np.asarray(held.labels)
    n_labels = cs.label.num_classes
    pool = [(c.name, schema.sources.get(c.name, "human"), np.asarray(train.concepts)[:, k],
             np.asarray(held.concepts)[:, k], c.cardinality) for k, c in enumerate(cs)]
    all_data = (_ceiling(np.asarray(train.concepts), train_y, np.asarray(held.concepts), split_y, cs.cardinalities,
                         n_labels) if len(cs) else _ceiling(np.zeros((len(train_y), 0), int), train_y,
                                                            np.zeros((len(split_y), 0), int), split_y, [], n_labels))
    found = propose_candidates(train.texts, train.labels, held.texts, cs.label.values, embedder, clusters,
                               candidates, min_support, phrases, language, seed) if candidates > 0 else []
    pool += [(c.name, "candidate", _recode(c.train, len(c.values)), _recode(c.split, len(c.values)),
              len(c.values) + 1) for c in found]
    steps, base = greedy_selection(pool, train_y, split_y, n_labels, max_concepts)
    bound = embedding_bound(train.texts, train_y, held.texts, split_y, embedder, n_labels, language, seed=seed)

    # the bank: its concepts by the first step that picked one of their columns, then useful candidates
    rank = {s.concept: s.step for s in steps}

    def bank_rank(c: BankConcept) -> int:
        names = [n for n in (c.name, f"{c.name}_grade") if n in rank]
        names += [h.name for h in cs if c.human_column and h.column == c.human_column and h.name in rank]
        return min((rank[n] for n in names), default=10**6)

    by_name = {c.name: c for c in found}
    kept = [by_name[s.concept] for s in steps if s.source == "candidate" and s.gain_f1 > 0]
    out_bank = ConceptBank(f"{bank.name}_discovered", tuple(sorted(bank.concepts, key=bank_rank))
                           + tuple(c.bank_concept() for c in kept), bank.unknown, bank.source)
    out = folder / "discovery"
    header = ("# Proposed by python -m sparsecbm.annotate ... discover=true: the bank's concepts in strict-ceiling\n"
              "# rank order, then the candidate concepts that raised the ceiling (rename them and their values,\n"
              "# edit the example phrases, delete what is not a concept). Ranking: ranking.md.\n")
    bank_file = out_bank.save(out / "bank.yaml", header)
    report = DiscoveryReport(steps, base, all_data,
                             [{"name": c.name, "description": c.description, "support": c.support,
                               "mutual_information": c.mutual_information, "values": c.values,
                               "kept": c in kept} for c in found], str(bank_file), split, bound)
    with open(out / "ranking.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step", "concept", "source", "ceiling_f1", "ceiling_acc", "gain_f1"])
        for s in steps:
            w.writerow([s.step, s.concept, s.source, f"{s.ceiling_f1:.4f}", f"{s.ceiling_acc:.4f}", f"{s.gain_f1:.4f}"])
    (out / "ranking.md").write_text(report.markdown())
    write_json(out / "discovery.json", report.to_dict())
    return report
