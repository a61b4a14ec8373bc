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

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from sparsecbm.interpret.attribution import Tokens, concept_prob_fn

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
