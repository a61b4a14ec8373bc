"""Score every sentence of every text against every value phrase of a concept bank, and decide values.

For concept *c* with values *v* (example phrases *p*), sentence *s* of a text scores
``sim(s, v) = max_p cos(e_s, e_p)``; the text's **best-matching sentence** is the one with the highest
``max_v sim(s, v)`` (its *relevance* to the concept). The value is read from that sentence:

- ``unknown`` when the relevance is below the concept's threshold ``tau`` (nothing is about the concept);
- else ``argmax_v sim(s, v) + bias_v`` (a bias shifts the decision between values, the "margin").

``tau`` and the bias are calibrated on a labelled split (grid search for the best macro-F1 against the
human labels) when the data has human labels for the concept (:func:`calibrate_threshold`), or fitted
as a small logistic regression on the same similarity scores (:func:`calibrate_logreg`). Concepts without
human labels use the documented rule of :func:`default_rule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparsecbm.annotate.bank import BankConcept, ConceptBank
from sparsecbm.annotate.embed import SentenceEmbedder
from sparsecbm.annotate.sentences import flatten_sentences, per_text_mean


@dataclass
class ConceptScores:
    """Similarity scores of N texts for one concept with V values and P phrases.

    Attributes:
        relevance: ``[N]`` the best sentence's relevance ``max_v sim(s, v)``.
        best: ``[N, V]`` value scores of the best-matching sentence.
        top: ``[N, V]`` each value's best score over all sentences.
        phrases_best: ``[N, P]`` the best sentence's similarity to every phrase.
        phrases_top: ``[N, P]`` every phrase's best similarity over all sentences.
        sentence: ``[N]`` index of the best-matching sentence within its text.
        mean_polarity: ``[N]`` second value minus first, averaged over all the text's sentences (two values).
        embedding: ``[N, 2D]`` the best sentence's embedding and the mean of the text's sentence embeddings
            (what ``calibration=probe`` reads).
    """

    relevance: np.ndarray
    best: np.ndarray
    top: np.ndarray
    phrases_best: np.ndarray
    phrases_top: np.ndarray
    sentence: np.ndarray
    mean_polarity: np.ndarray | None = None
    embedding: np.ndarray | None = None

    def features(self) -> np.ndarray:
        """``[N, F]`` inputs of the logistic-regression calibration."""
        return np.concatenate([self.relevance[:, None], self.best, self.top, self.phrases_best, self.phrases_top], 1)

    def polarity(self, by: str = "best") -> np.ndarray:
        """``[N]`` second value minus first (positive minus negative): the graded score, at the best sentence
        (``by="best"``) or averaged over all sentences (``by="mean"``: the text's overall tone on the concept)."""
        if by == "mean":
            return self.mean_polarity
        return self.best[:, 1] - self.best[:, 0]


def score_texts(texts: Sequence[str], bank: ConceptBank, embedder: SentenceEmbedder,
                language: str = "en") -> dict[str, ConceptScores]:
    """Embed every sentence once (batched, cached) and score it against every concept of the bank."""
    sentences, owner = flatten_sentences(texts, language)
    starts = np.searchsorted(owner, np.arange(len(texts)))
    S = embedder.embed(sentences, f"embedding {len(sentences)} sentences")
    phrases = [p for c in bank.concepts for ps in c.values.values() for p in ps]
    P = embedder.embed(phrases, "embedding concept phrases")
    text_mean = per_text_mean(S, owner, len(texts))  # [N, D] mean sentence embedding per text
    out, col = {}, 0
    for c in bank.concepts:
        n_phr = sum(len(ps) for ps in c.values.values())
        sim = S @ P[col: col + n_phr].T  # [n_sentences, P]
        col += n_phr
        groups, j = [], 0
        for ps in c.values.values():
            groups.append(slice(j, j + len(ps)))
            j += len(ps)
        per_value = np.stack([sim[:, g].max(1) for g in groups], 1)  # [n_sentences, V]
        rel = per_value.max(1)
        # best sentence per text: the segment-wise argmax of the relevance
        order = np.lexsort((-rel, owner))
        best_idx = order[starts]
        out[c.name] = ConceptScores(
            embedding=np.concatenate([S[best_idx], text_mean], 1),
            relevance=rel[best_idx], best=per_value[best_idx], top=np.maximum.reduceat(per_value, starts, axis=0),
            phrases_best=sim[best_idx], phrases_top=np.maximum.reduceat(sim, starts, axis=0),
            sentence=best_idx - starts,
            mean_polarity=(per_text_mean(per_value[:, 1] - per_value[:, 0], owner, len(texts))
                           if per_value.shape[1] == 2 else np.zeros(len(texts))))
    return out


@dataclass
class Decision:
    """How one concept's value is read from its scores.

    Attributes:
        kind: ``threshold`` (calibrated tau + bias), ``logreg`` (calibrated logistic regression) or
            ``rule`` (no human labels: :func:`default_rule`).
        tau: Relevance below which the value is ``unknown``.
        bias: Added to the value scores before the argmax.
        model: The fitted logistic regression (``logreg``).
        calibration: What it was calibrated on (split, rows, macro-F1 there).
    """

    kind: str
    tau: float
    bias: list[float]
    model: Any = None
    calibration: dict[str, Any] = field(default_factory=dict)

    def decide(self, scores: ConceptScores) -> np.ndarray:
        """``[N]`` value indices, ``V`` meaning unknown (V = number of bank values)."""
        n_values = scores.best.shape[1]
        if self.kind == "logreg":
            return self.model.predict(scores.features())
        if self.kind == "probe":
            return self.model.predict(probe_features(scores))
        value = (scores.best + np.asarray(self.bias)[None]).argmax(1)
        return np.where(scores.relevance < self.tau, n_values, value)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tau": float(self.tau), "bias": [float(b) for b in self.bias], **self.calibration}


def _macro_f1(y, p, n) -> float:
    """The project's macro-F1 (:func:`sparsecbm.metrics.macro_f1`: a value absent from both the labels and
    the predictions is left out of the mean, not scored 0)."""
    from sparsecbm.metrics import macro_f1

    return macro_f1(p, y, n)


def macro_f1_scorer():
    """The same macro-F1 as a scikit-learn scorer (cross-validation of ``C``); classes = the labels' values."""
    from sklearn.metrics import make_scorer

    return make_scorer(lambda y, p: _macro_f1(y, p, int(max(np.max(y), np.max(p))) + 1))


def calibrate_threshold(scores: ConceptScores, labels: np.ndarray, grid: int = 41) -> Decision:
    """Grid search of ``tau`` (and, for two values, the bias between them) for the best macro-F1 against
    ``labels`` (value indices, V = unknown). Ties keep the first (lowest) grid point: deterministic."""
    n_values = scores.best.shape[1]
    qs = np.linspace(0.02, 0.98, grid)
    taus = np.unique(np.quantile(scores.relevance, qs))
    biases = [np.zeros(n_values)]
    if n_values == 2:
        diffs = np.unique(np.quantile(scores.polarity(), qs))
        biases = [np.array([0.0, -d]) for d in diffs]
    best = (-1.0, None, None)
    for tau in taus:
        for bias in biases:
            f1 = _macro_f1(labels, Decision("threshold", tau, list(bias)).decide(scores), n_values + 1)
            if f1 > best[0] + 1e-12:
                best = (f1, float(tau), bias)
    f1, tau, bias = best
    return Decision("threshold", tau, [float(b) for b in bias], calibration={"macro_f1_on_calibration": f1})


def calibrate_logreg(scores: ConceptScores, labels: np.ndarray, C: float = 10.0) -> Decision:
    """A logistic regression on the concept's similarity scores (the best sentence's and the top ones)."""
    from sklearn.linear_model import LogisticRegression

    n_values = scores.best.shape[1]
    if len(np.unique(labels)) < 2:
        return calibrate_threshold(scores, labels)
    model = LogisticRegression(max_iter=3000, C=C).fit(scores.features(), labels)
    d = Decision("logreg", float("nan"), [0.0] * n_values, model=model)
    d.calibration = {"macro_f1_on_calibration": _macro_f1(labels, d.decide(scores), n_values + 1)}
    return d


def probe_features(scores: ConceptScores) -> np.ndarray:
    """``[N, 2D + F]``: the best sentence's embedding, the text's mean sentence embedding and the similarity
    scores of :meth:`ConceptScores.features`."""
    if scores.embedding is None:
        raise ValueError("calibration=probe needs the sentence embeddings of the scores (score_texts keeps them)")
    return np.concatenate([scores.embedding, scores.features()], 1)


def calibrate_probe(scores: ConceptScores, labels: np.ndarray,
                    Cs: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1, 1.0), folds: int = 5,
                    seed: int = 0, groups: np.ndarray | None = None) -> Decision:
    """A linear probe on the sentence embeddings (and the similarity scores), fitted on the labelled split.

    Standardised inputs, logistic regression with balanced class weights; its ``C`` is chosen by stratified
    ``folds``-fold cross validation on macro-F1 over ``Cs`` (fixed fold order: ``seed``; rows of one ``groups``
    value, e.g. :func:`near_duplicate_groups`, stay in one fold). With human labels for a concept this is
    a supervised annotator trained on ``calibration_split``; agreement is then measured on the other splits.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_values = scores.best.shape[1]
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        return calibrate_threshold(scores, labels)
    X = probe_features(scores)

    def probe(C: float):  # standardised inputs: the embeddings and the similarity scores live on different scales
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=3000))

    k = fold_count(labels, groups, folds)
    chosen = float(Cs[len(Cs) // 2])  # one C given, or a value with a single labelled example: no cross-validation
    if k >= 2 and len(Cs) > 1:
        cv = list(fold_splits(labels, groups, k, seed))
        cv_f1 = [float(cross_val_score(probe(C), X, labels, cv=cv, scoring=macro_f1_scorer()).mean()) for C in Cs]
        chosen = float(Cs[int(np.argmax(cv_f1))])  # ties: the first (smallest, most regularised) C
    model = probe(chosen).fit(X, labels)
    d = Decision("probe", float("nan"), [0.0] * n_values, model=model)
    d.calibration = {"macro_f1_on_calibration": _macro_f1(labels, d.decide(scores), n_values + 1), "C": chosen,
                     "cv_folds": k if k >= 2 else 0}
    return d


CALIBRATORS = {"threshold": lambda sc, y, **kw: calibrate_threshold(sc, y),
               "logreg": lambda sc, y, **kw: calibrate_logreg(sc, y),
               "probe": lambda sc, y, Cs=None, groups=None, **kw: calibrate_probe(sc, y, groups=groups,
                                                                                 **({"Cs": Cs} if Cs else {}))}

#: Two texts whose sets of word bigrams overlap by at least this Jaccard index are copies of one text (an edit of
#: it); raised step by step when the groups it makes are too large to spread over the folds.
NEAR_DUPLICATE_JACCARD = (0.4, 0.5, 0.6, 0.8)


def near_duplicate_groups(texts: Sequence[str], max_group: int | None = None,
                          thresholds: Sequence[float] = NEAR_DUPLICATE_JACCARD) -> tuple[np.ndarray, float]:
    """``([N] group ids, threshold used)``: equal texts, texts whose sets of word bigrams overlap by Jaccard >=
    the threshold, and texts chained through such pairs share a group. Edited copies of one review (CEBaB's
    counterfactual edits sit in its dev and test splits beside their originals) must not fall on both sides of
    a fold, or cross-fitted agreement is in-sample. The first of ``thresholds`` whose largest group has at most
    ``max_group`` rows is used (templated short texts chain into one group at a low threshold); when none
    does, only equal texts are grouped (threshold ``1.0``).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components
    from sklearn.feature_extraction.text import CountVectorizer

    n = len(texts)
    _, first, inverse = np.unique([" ".join(t.lower().split()) for t in texts], return_index=True,
                                  return_inverse=True)
    equal = (np.arange(n), first[inverse.ravel()])  # each text -> the first text equal to it
    r, c, v = np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0)
    try:
        X = CountVectorizer(binary=True, ngram_range=(2, 2)).fit_transform(texts).astype(np.float32).tocsr()
    except ValueError:  # no two-word text at all: equal texts only
        X = None
    if X is not None:
        size, chunk, parts = np.asarray(X.sum(1)).ravel(), max(1, 2**24 // max(n, 1)), []
        for a in range(0, n, chunk):  # [chunk, N] overlaps at a time: memory stays O(N) for any split size
            inter = (X[a:a + chunk] @ X.T).toarray()
            union = size[a:a + chunk, None] + size[None, :] - inter
            jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            i, j = np.nonzero(jac >= min(thresholds))
            parts.append((i + a, j, jac[i, j]))
        r, c, v = (np.concatenate(x) for x in zip(*parts))

    def components(keep: np.ndarray) -> np.ndarray:  # equal texts + the kept bigram pairs, chained
        rows, cols = np.concatenate([r[keep], equal[0]]), np.concatenate([c[keep], equal[1]])
        return connected_components(sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)),
                                    directed=False)[1]

    for t in sorted(thresholds):
        groups = components(v >= t)
        if max_group is None or np.bincount(groups).max() <= max_group:
            return groups, float(t)
    return components(np.zeros(len(v), dtype=bool)), 1.0


def fold_count(labels: np.ndarray, groups: np.ndarray | None, folds: int) -> int:
    """How many folds the labels allow: no more than the rarest value's rows, nor the groups; 0 for one value."""
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        return 0
    k = int(min(folds, counts.min()))
    return k if groups is None else min(k, len(np.unique(groups)))


def fold_splits(labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int):
    """Stratified ``k``-fold (fit, held) index pairs; with ``groups`` every group's rows stay in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        return StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels)
    return StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(labels, labels, groups)


#: Folds of the calibration split's cross-fitting (:func:`crossfit`).
CROSSFIT_FOLDS = 5


def crossfit(kind: str, scores: ConceptScores, labels: np.ndarray, decision: Decision, folds: int = CROSSFIT_FOLDS,
             seed: int = 0, groups: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Out-of-sample values for the calibration split's own rows: each of ``folds`` stratified folds is decided
    by a ``kind`` calibration fitted on the other folds (``probe`` keeps the ``C`` that ``decision`` chose on
    the whole split: one fit per fold). Without it the split's agreement, and everything measured on the
    split's machine values (checkpoint selection, concept discovery), would be in-sample. Rows sharing a
    ``groups`` value (near-duplicate texts: :func:`near_duplicate_groups`) stay in one fold.

    Returns:
        ``([N] value indices, folds used)``; ``folds`` is 0 (and the values ``decision``'s own) when the
        rarest labelled value (or the number of groups) allows fewer than 2 folds.
    """
    out = decision.decide(scores)
    k = fold_count(labels, groups, folds)
    if k < 2:
        return out, 0
    C = decision.calibration.get("C")
    for fit_idx, held in fold_splits(labels, groups, k, seed):
        part = CALIBRATORS[kind](subset_scores(scores, fit_idx), labels[fit_idx], Cs=(C,) if C is not None else None,
                                 groups=None if groups is None else groups[fit_idx])
        out[held] = part.decide(subset_scores(scores, held))
    return out, k


def subset_scores(sc: ConceptScores, idx: np.ndarray) -> ConceptScores:
    """The scores of rows ``idx`` (indices or a bool mask)."""
    fields = ("relevance", "best", "top", "phrases_best", "phrases_top", "sentence", "mean_polarity", "embedding")
    return ConceptScores(*(None if getattr(sc, f) is None else getattr(sc, f)[idx] for f in fields))


def default_rule(concept: BankConcept, calibrated: Sequence[Decision], default_tau: float) -> Decision:
    """Threshold for a concept without human labels.

    The rule: ``tau`` is the median of the thresholds calibrated for this bank's human-labelled concepts
    in the same run (same model, same phrase style), or ``default_tau`` when none was calibrated; no bias.
    """
    taus = [d.calibration.get("threshold_tau", d.tau) for d in calibrated]
    taus = [t for t in taus if np.isfinite(t)]
    tau = float(np.median(taus)) if taus else float(default_tau)
    source = f"median of {len(taus)} calibrated thresholds" if taus else "default_tau"
    return Decision("rule", tau, [0.0] * len(concept.values), calibration={"rule": source})


def grade_edges(scores: np.ndarray, levels: int) -> list[float]:
    """``levels - 1`` cut points: quantiles of ``scores`` (equal-frequency levels)."""
    if len(scores) == 0:
        return [0.0] * (levels - 1)
    return [float(q) for q in np.quantile(scores, np.arange(1, levels) / levels)]


def grade(scores: np.ndarray, mentioned: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """``[N]`` level 0..L-1 from the cut points, ``L`` (unknown) where the concept is not mentioned."""
    level = np.searchsorted(np.asarray(edges), scores, side="right")
    return np.where(mentioned, level, len(edges) + 1)
