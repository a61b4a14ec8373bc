"""The one place the causal evaluation touches a trained model: predict label probabilities for texts,
set a concept and re-predict, and (SparseCBM) edit a concept's mask. Everything in
:mod:`sparsecbm.interpret.icace` and :mod:`sparsecbm.interpret.causal_explainers` goes through
:class:`CausalModel`, built on an :class:`~sparsecbm.session.InferenceSession` (its tokenisation, its nn
model), so a change of the inference API is re-pointed here alone.

Example:
    >>> model = CausalModel.load("runs/cem/checkpoints/best.ckpt")
    >>> before = model.label_probs(["The pasta was cold."])                  # [1, L]
    >>> after = model.intervened_probs(["The pasta was cold."], "food", "Positive")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.interpret.strategies import LOGIT_EPS, Bottleneck


class CausalModel:
    """A trained model seen as ``texts -> label probabilities``, with concept interventions.

    Args:
        session: An :class:`~sparsecbm.session.InferenceSession` (its ``model``, ``meta`` and ``tokenize``).
        batch_size: Texts per forward pass.
        eps: See :func:`~sparsecbm.interpret.strategies.target_activation` (``logits`` models).
    """

    def __init__(self, session, batch_size: int = 64, eps: float = LOGIT_EPS):
        self.session, self.batch_size, self.eps = session, int(batch_size), eps
        self.name = str(session.ckpt_path or "")

    @classmethod
    def load(cls, ckpt_path: str | Path, accelerator: str = "auto", data_cfg=None, batch_size: int = 64,
             eps: float = LOGIT_EPS) -> CausalModel:
        """A checkpoint, through :meth:`~sparsecbm.session.InferenceSession.from_checkpoint`."""
        from sparsecbm.session import InferenceSession

        return cls(InferenceSession.from_checkpoint(ckpt_path, data_cfg, accelerator), batch_size, eps)

    # ------------------------------------------------------------------ facts
    @property
    def model(self):
        """The :class:`~sparsecbm.models.cbm.ConceptBottleneckModel`."""
        return self.session.model

    @property
    def concept_set(self) -> ConceptSet:
        return self.session.concept_set

    @property
    def has_concepts(self) -> bool:
        return bool(self.model.has_concepts)

    @property
    def mode(self) -> str:
        return self.session.mode

    @property
    def label_values(self) -> list[str]:
        return list(self.concept_set.label.values)

    @property
    def has_masks(self) -> bool:
        """Per-concept subnetworks that a mask-level edit can change (SparseCBM, not ``sparsity.shared``)."""
        return bool(self.model.sparse) and not getattr(self.model.backbone, "shared", False)

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": self.name, "mode": self.mode,
                "activation": self.model.activation if self.has_concepts else None, "sparse": self.has_masks}

    def tokenize(self, texts: Sequence[str]):
        return self.session.tokenize(texts)

    # ------------------------------------------------------------- predicting
    def _batches(self, texts: Sequence[str]):
        for start in range(0, len(texts), self.batch_size):
            yield self.tokenize(list(texts[start:start + self.batch_size]))[0]

    @torch.no_grad()
    def label_probs(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, L]`` the model's label distribution for each text (CPU, float)."""
        self.model.eval()
        if self.has_concepts:
            return self.bottleneck(texts).label_probs()
        out = [self.model(b["input_ids"], b["attention_mask"]).label_logits.float().softmax(-1).cpu()
               for b in self._batches(texts)]
        return torch.cat(out) if out else torch.zeros(0, len(self.label_values))

    @torch.no_grad()
    def bottleneck(self, texts: Sequence[str]) -> Bottleneck:
        """The concept outputs of ``texts`` and the label head (every intervention then re-runs the head only)."""
        from sparsecbm.models.cbm import ConceptOutputs

        self.model.eval()
        parts = [self.model.concept_outputs(b["input_ids"], b["attention_mask"]).apply(lambda t: t.float().cpu())
                 for b in self._batches(texts)]
        return Bottleneck.from_model(self.model, ConceptOutputs.cat(parts), self.eps)

    def one_hot(self, concept: str, values: Sequence[str]) -> torch.Tensor:
        """``[N, C]`` one-hot targets of ``concept`` for value names."""
        spec = self.concept_set[concept]
        idx = torch.tensor([spec.values.index(v) for v in values])
        return torch.nn.functional.one_hot(idx, spec.cardinality).float()

    def set_concept(self, bottleneck: Bottleneck, concept: str, targets: torch.Tensor) -> torch.Tensor:
        """``[N, L]`` label distribution with ``concept``'s distribution set to ``targets`` (``[N, C]``)."""
        k = self.concept_set.position(concept)
        full: list[torch.Tensor | None] = [None] * bottleneck.n_concepts
        full[k] = targets.float()
        return bottleneck.label_probs(full)

    def intervened_probs(self, texts: Sequence[str], concept: str, value: str) -> torch.Tensor:
        """``[N, L]`` the label distribution of ``texts`` with ``concept`` set to ``value`` (hard)."""
        return self.set_concept(self.bottleneck(texts), concept, self.one_hot(concept, [value] * len(texts)))

    # ------------------------------------------------------------ mask level
    def mask_edit_probs(self, texts: Sequence[str], concepts: Sequence[str], values: Sequence[str],
                        portion: float = 0.05, then_set: bool = False) -> torch.Tensor:
        """``[N, L]``: per text, concept ``concepts[i]``'s mask edited toward ``values[i]`` (SparseCBM's
        prune-and-grow, :class:`~sparsecbm.sparsity.mask_editing.MaskEditor`), the model re-run, and with
        ``then_set`` the concept also set to the value; the masks are restored after every text."""
        from sparsecbm.sparsity.mask_editing import MaskEditor

        editor = MaskEditor(self.model, portion)
        out = []
        try:
            for text, concept, value in zip(texts, concepts, values):
                batch = self.tokenize([text])[0]
                k = self.concept_set.position(concept)
                target = self.concept_set[concept].values.index(value)
                editor.intervene(k, batch["input_ids"], batch["attention_mask"], target, restore=False)
                with torch.no_grad():
                    outputs = self.model.concept_outputs(batch["input_ids"], batch["attention_mask"])
                b = Bottleneck.from_model(self.model, outputs.apply(lambda t: t.float().cpu()), self.eps)
                out.append(self.set_concept(b, concept, self.one_hot(concept, [value])) if then_set else b.label_probs())
                editor.reset()
        finally:
            editor.reset()
        return torch.cat(out) if out else torch.zeros(0, len(self.label_values))


def counterfactual_effect(model: CausalModel, text: str, counterfactual_text: str, concept: str,
                          value: str) -> dict[str, Any]:
    """For one text with a counterfactual: what setting ``concept`` to ``value`` predicts, beside what the model
    actually does on the edited text (the explorer's view).

    Returns:
        ``labels``; ``before`` ``N(x)``, ``intervened`` (``do(concept=value)`` on ``x``; ``None`` for a model
        without concepts) and ``counterfactual`` ``N(x')`` as label distributions; ``predicted_change``
        (intervened - before), ``actual_change`` (counterfactual - before) and their CEBaB errors (``l2``,
        ``cosine``, ``normdiff``; ``None`` without concepts).
    """
    from sparsecbm.interpret.icace import icace_errors

    probs = model.label_probs([text, counterfactual_text])
    before, after = probs[0], probs[1]
    actual = after - before
    out: dict[str, Any] = {"labels": model.label_values, "concept": concept, "value": value,
                           "before": before.tolist(), "counterfactual": after.tolist(),
                           "actual_change": actual.tolist(), "intervened": None, "predicted_change": None,
                           "errors": None}
    if model.has_concepts:
        intervened = model.intervened_probs([text], concept, value)[0]
        predicted = intervened - before
        errors = icace_errors(actual[None], predicted[None], decimals=None)
        out.update(intervened=intervened.tolist(), predicted_change=predicted.tolist(),
                   errors={k: float(v[0]) for k, v in errors.items()})
    return out
