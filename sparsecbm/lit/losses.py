"""The training losses every mode shares: class-weighted cross-entropies, the hybrid bottleneck's residual
penalty and dropout, and training interventions (the label head reads some concepts at their true value)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from sparsecbm.models.bottleneck import edited_inputs, ground_truth_targets, random_concept_mask
from sparsecbm.models.cbm import ConceptBottleneckModel, ConceptOutputs, as_outputs, concept_cross_entropies
from sparsecbm.models.residual import cross_correlation_penalty


def balanced_class_weights(concepts, cardinalities: list[int], device=None, power: float = 1.0) -> list[torch.Tensor]:
    """Per concept ``[C_k]`` weights ``(n / (C_k * count)) ** power`` from ``[N, K]`` training values (``power=1``
    is sklearn's "balanced": every value contributes equally to its concept's loss, which targets macro-F1;
    ``power=0.5``, the ``sqrt`` option, goes half-way from the plain loss in log space). A value absent from
    training gets weight 0 (no examples to weigh)."""
    values = torch.as_tensor(concepts, dtype=torch.long).reshape(-1, len(cardinalities))
    out = []
    for k, card in enumerate(cardinalities):
        counts = torch.bincount(values[:, k], minlength=card).float()
        w = torch.where(counts > 0, (values.shape[0] / (card * counts.clamp(min=1))) ** power, torch.zeros_like(counts))
        out.append(w.to(device) if device is not None else w)
    return out


CLASS_WEIGHT_POWER = {"balanced": 1.0, "sqrt": 0.5}  # cbm.*_class_weight -> power of the balanced weights


def concept_loss(concept_logits: list[torch.Tensor], concepts: torch.Tensor,
                 weights: list[torch.Tensor | None]) -> torch.Tensor:
    """Mean over concepts of the cross-entropy, concept ``k`` weighted by ``weights[k]`` (or not, ``None``):
    the mean of :func:`~sparsecbm.models.cbm.concept_cross_entropies`, which the subnetwork scorers read."""
    return torch.stack(concept_cross_entropies(concept_logits, concepts, weights)).mean()


def task_loss(label_logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
              offset: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the label, class-weighted by ``weight`` (``[L]`` or ``None``), of the logits plus
    ``offset`` (``[L]``: the logit adjustment ``τ · log prior``, training only; or ``None``)."""
    if offset is not None:
        label_logits = label_logits + offset.to(label_logits)
    return F.cross_entropy(label_logits, labels, weight=None if weight is None else weight.to(label_logits))


def log_prior(labels, n_classes: int, tau: float) -> torch.Tensor:
    """``[L]`` ``tau · log(frequency)`` of the training labels (a class absent from training: the log of half
    an example, finite)."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long).flatten(), minlength=n_classes).double()
    return (tau * torch.log(counts.clamp(min=0.5) / counts.sum())).float()


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


def prototype_embeddings(embeddings: list[torch.Tensor] | None, logits: list[torch.Tensor], prob: float,
                         training: bool) -> list[torch.Tensor] | None:
    """Concept-embedding models in training: with probability ``prob`` per example, *every* concept's value
    embeddings are replaced by the batch's value prototypes (each value's embedding averaged over the batch,
    weighted by how strongly each example predicts that value; detached), so that for those examples the
    label head reads the predicted values and nothing of the review's context. It is the training-time
    counterpart of the report's value-only condition (``leakage_value_only``) and lowers that leakage."""
    if embeddings is None or prob <= 0 or not training:  # no random draw: other runs keep their RNG stream
        return embeddings
    drop = torch.rand(embeddings[0].shape[0], 1, 1, device=embeddings[0].device) < prob
    out = []
    for e, lg in zip(embeddings, logits):
        w = lg.detach().softmax(-1).unsqueeze(-1)  # [B, C_k, 1]
        proto = (w * e.detach()).sum(0, keepdim=True) / w.sum(0, keepdim=True).clamp(min=1e-6)
        out.append(torch.where(drop, proto.expand_as(e), e))
    return out


def training_inputs(model: ConceptBottleneckModel, outputs: ConceptOutputs, concepts: torch.Tensor,
                    prob: float, prototype_prob: float = 0.0,
                    training: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Concept part of the label head's input during training, and the ``[B, K]`` bool mask of the
    concepts replaced by their true value (each with probability ``prob``, as in concept-embedding-model
    training), so the label head learns to trust corrected concepts. With ``prototype_prob`` some examples
    read value prototypes instead of their own embeddings (:func:`prototype_embeddings`)."""
    if (protos := prototype_embeddings(outputs.embeddings, outputs.logits, prototype_prob, training)) \
            is not outputs.embeddings:
        outputs = dataclasses.replace(outputs, embeddings=protos)
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
