"""Faithfulness of any ``[B, T]`` token scoring: ERASER comprehensiveness / sufficiency and deletion AUC.

For example ``b`` and concept ``k`` with predicted value ``y`` (on the full input), only the
candidate tokens (real, non-special) are ranked; the top ``q`` fraction is ``ceil(q * n)`` tokens
(at least one). A removed token is replaced by the removal id of
:class:`~sparsecbm.interpret.attribution.Tokens` (``[MASK]``), the same baseline the attribution
methods perturb with.

- comprehensiveness(q) = p(y | x) - p(y | x without its top-q tokens)       (higher is better)
- sufficiency(q)       = p(y | x) - p(y | only the top-q tokens of x)      (lower is better)
- deletion AUC: area under p(y | x without its top-f tokens) for f = 0, 1/s, ..., 1 (lower is better)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sparsecbm.errors import ConfigError
from sparsecbm.interpret.attribution import Tokens, concept_prob_fn

log = logging.getLogger(__name__)

FRACTIONS = (0.05, 0.10, 0.20)


@dataclass
class FaithfulnessScores:
    """Per-example metrics of one scoring on one concept (lists of length ``B``)."""

    comprehensiveness: dict[str, list[float]] = field(default_factory=dict)  # key: "5%", "10%", "20%"
    sufficiency: dict[str, list[float]] = field(default_factory=dict)
    deletion_auc: list[float] = field(default_factory=list)

    def extend(self, other: FaithfulnessScores) -> None:
        for mine, theirs in (
            (self.comprehensiveness, other.comprehensiveness),
            (self.sufficiency, other.sufficiency),
        ):
            for key, values in theirs.items():
                mine.setdefault(key, []).extend(values)
        self.deletion_auc.extend(other.deletion_auc)

    def summary(self) -> dict[str, float]:
        """Means: ``comp@5%`` ... ``suff@20%``, ``comp`` / ``suff`` (averaged over budgets), ``deletion_auc``."""
        out = {}
        for prefix, d in (("comp", self.comprehensiveness), ("suff", self.sufficiency)):
            for key, values in d.items():
                out[f"{prefix}@{key}"] = float(np.mean(values))
            out[prefix] = float(np.mean([np.mean(v) for v in d.values()]))
        out["deletion_auc"] = float(np.mean(self.deletion_auc))
        out["n"] = len(self.deletion_auc)
        return out


def _replace(ids: torch.Tensor, positions: torch.Tensor, baseline_id: int) -> torch.Tensor:
    out = ids.clone()
    out[positions] = baseline_id
    return out


def _label(q: float) -> str:
    return f"{round(q * 100):g}%"


@torch.no_grad()
def faithfulness(
    model,
    batch: dict,
    concept: int,
    scores: torch.Tensor,
    tokens: Tokens,
    fractions: tuple[float, ...] = FRACTIONS,
    deletion_steps: int = 10,
) -> FaithfulnessScores:
    """Comprehensiveness, sufficiency (at each of ``fractions``) and deletion AUC of ``scores`` ``[B, T]``.

    Example:
        >>> s = get_method("lig", tokens).attribute(model, batch, 0)
        >>> faithfulness(model, batch, 0, s, tokens).summary()["comp@10%"]
    """
    model.eval()
    fn = concept_prob_fn(model, concept)
    ids_all, mask_all = batch["input_ids"], batch["attention_mask"]
    cand_all = tokens.candidates(ids_all, mask_all)
    out = FaithfulnessScores()
    steps = [i / deletion_steps for i in range(deletion_steps + 1)]
    for b in range(ids_all.shape[0]):
        real = mask_all[b].bool()
        ids, cand = ids_all[b, real], cand_all[b, real]
        pos = torch.nonzero(cand).flatten()
        n = len(pos)
        order = pos[torch.argsort(scores[b, real][pos].float(), descending=True, stable=True)] if n else pos
        variants = [ids]
        for q in fractions:
            k = max(1, math.ceil(q * n)) if n else 0
            variants.append(_replace(ids, order[:k], tokens.baseline_id))  # top-q removed
            variants.append(_replace(ids, order[k:], tokens.baseline_id))  # only top-q kept
        for f in steps[1:]:
            variants.append(_replace(ids, order[: round(f * n)], tokens.baseline_id))
        probs = fn(torch.stack(variants), torch.ones(len(variants), len(ids), dtype=mask_all.dtype))
        y = probs[0].argmax()
        p = probs[:, y].tolist()
        full = p[0]
        for i, q in enumerate(fractions):
            out.comprehensiveness.setdefault(_label(q), []).append(full - p[1 + 2 * i])
            out.sufficiency.setdefault(_label(q), []).append(full - p[2 + 2 * i])
        curve = [full, *p[1 + 2 * len(fractions) :]]
        out.deletion_auc.append(float(np.trapezoid(curve, steps)))
    return out


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
    from sparsecbm.interpret.attribution import get_method

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
