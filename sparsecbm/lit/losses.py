"""The training losses every mode shares: class-weighted cross-entropies, the hybrid bottleneck's residual
penalty and dropout, and training interventions (the label head reads some concepts at their true value)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecbm.models.bottleneck import edited_inputs, ground_truth_targets, random_concept_mask
from sparsecbm.models.cbm import ConceptBottleneckModel, ConceptOutputs, as_outputs
from sparsecbm.models.residual import cross_correlation_penalty


def balanced_class_weights(concepts, cardinalities: list[int], device=None) -> list[torch.Tensor]:
    """Per concept ``[C_k]`` weights ``n / (C_k * count)`` from ``[N, K]`` training values (sklearn's
    "balanced"): every value contributes equally to its concept's loss, which targets macro-F1. A value
    absent from training gets weight 0 (no examples to weigh)."""
    values = torch.as_tensor(concepts, dtype=torch.long).reshape(-1, len(cardinalities))
    out = []
    for k, card in enumerate(cardinalities):
        counts = torch.bincount(values[:, k], minlength=card).float()
        w = torch.where(counts > 0, values.shape[0] / (card * counts.clamp(min=1)), torch.zeros_like(counts))
        out.append(w.to(device) if device is not None else w)
    return out


def concept_loss(concept_logits: list[torch.Tensor], concepts: torch.Tensor,
                 weights: list[torch.Tensor | None]) -> torch.Tensor:
    """Mean over concepts of the cross-entropy, concept ``k`` weighted by ``weights[k]`` (or not, ``None``)."""
    return torch.stack([
        F.cross_entropy(lg, concepts[:, k], weight=None if (w := weights[k]) is None else w.to(lg))
        for k, lg in enumerate(concept_logits)
    ]).mean()


def task_loss(label_logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the label, class-weighted by ``weight`` (``[L]`` or ``None``)."""
    return F.cross_entropy(label_logits, labels, weight=None if weight is None else weight.to(label_logits))


def residual_penalties(outputs: ConceptOutputs, weight: float) -> dict[str, torch.Tensor]:
    """Hybrid bottleneck: ``weight`` x cross-correlation of the residual with the concept probabilities
    (empty without a residual channel)."""
    if outputs.residual is None:
        return {}
    probs = torch.cat([lg.softmax(-1) for lg in outputs.logits], dim=-1)
    return {"residual": weight * cross_correlation_penalty(outputs.residual, probs)}


def dropped_residual(residual: torch.Tensor | None, prob: float, training: bool) -> torch.Tensor | None:
    """Hybrid bottleneck in training: each example's residual is replaced by the batch mean with
    probability ``prob``, so the label head must also decide from the concepts alone (the report's
    ``residual.without`` holds it at its mean the same way)."""
    if residual is None or prob <= 0 or not training:
        return residual
    drop = torch.rand(residual.shape[0], 1, device=residual.device) < prob
    return torch.where(drop, residual.mean(0, keepdim=True).detach(), residual)


def training_inputs(model: ConceptBottleneckModel, outputs: ConceptOutputs, concepts: torch.Tensor,
                    prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Concept part of the label head's input during training, and the ``[B, K]`` bool mask of the
    concepts replaced by their true value (each with probability ``prob``, as in concept-embedding-model
    training), so the label head learns to trust corrected concepts."""
    if prob <= 0:  # no random draw: runs without interventions keep their RNG stream
        mask = torch.zeros(concepts.shape[0], len(outputs.logits), dtype=torch.bool, device=concepts.device)
        return model.label_from_outputs(outputs)[1], mask
    mask = random_concept_mask(concepts.shape[0], len(outputs.logits), prob, device=concepts.device)
    targets = ground_truth_targets(concepts, model.concepts.cardinalities)
    return edited_inputs(outputs.logits, model.activation, targets, mask, embeddings=outputs.embeddings), mask


def label_logits_for_training(module, outputs: ConceptOutputs | list[torch.Tensor],
                              concepts: torch.Tensor) -> torch.Tensor:
    """Label logits of ``module`` (a :class:`~sparsecbm.lit.CBMLitModule`) from randomly intervened concept
    outputs and the (randomly dropped) residual."""
    outputs = as_outputs(outputs)
    return module.model.label_from_inputs(module.training_inputs(outputs, concepts)[0],
                                          module.dropped_residual(outputs.residual))
