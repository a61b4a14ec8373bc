"""Intervention *strategies*: what value a concept is set to, and how that reaches the label head.

An intervention on concept ``k`` replaces the concept head's predicted distribution ``p_k`` by a
target distribution ``q_k`` and re-runs the label head; nothing upstream changes.

- ``hard``: ``q_k`` is the one-hot of a chosen value.
- ``soft``: ``q_k`` is a user-given probability vector.
- ``ground_truth``: ``q_k`` is the one-hot of the dataset's true value.

The label head reads ``activation(q_k)`` with the model's own activation (see
:mod:`sparsecbm.models.bottleneck`, which defines how each activation is read and written):

- ``probs``: ``q_k`` itself;  ``hard``: the one-hot of ``argmax q_k``.
- ``embedding``: the mix ``sum_v q_k[v] e_{k,v}`` of the example's value embeddings, so a hard set
  writes exactly the chosen value's embedding in place of the predicted mix.
- ``logits``: a logit vector has a free offset that softmax ignores but a linear label head does
  not, so the written vector is ``log q'_k`` re-centred on the mean of the model's own logits for
  that example, with ``q'_k = (1 - eps) q_k + eps / C_k`` (``eps = LOGIT_EPS``) to keep it finite.
  Its softmax is exactly ``q'_k``; its offset is the one the head saw for this example. A hard set
  therefore writes a *confident* logit vector (gap ``log((1 - eps + eps/C) / (eps/C))`` ≈ 5.7 for
  ``C = 3``), as in Koh et al. (2020), but without needing training-set logit percentiles.
"""

from __future__ import annotations

import torch

from sparsecbm.models import bottleneck
from sparsecbm.models.bottleneck import (  # noqa: F401  (re-exported for interpret/ and user code)
    LOGIT_EPS,
    STRATEGIES,
    edited_inputs,
    ground_truth_targets,
    random_concept_mask,
)


def target_activation(
    target: torch.Tensor,
    predicted_logits: torch.Tensor,
    activation: str,
    eps: float = LOGIT_EPS,
    embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """The label-head input for one concept whose distribution is set to ``target``.

    Args:
        target: ``[B, C]`` probability vectors (rows sum to 1).
        predicted_logits: ``[B, C]`` the concept head's logits (only their mean is used, for ``logits``).
        activation: ``logits`` | ``probs`` | ``hard`` | ``embedding``.
        eps: Mass spread uniformly before taking the log (``logits`` only).
        embeddings: ``[B, C, m]`` the example's value embeddings (``embedding`` only).

    Returns:
        ``[B, C]`` (``[B, m]`` for ``embedding``) activations to write into the label head's input.
    """
    return bottleneck.activation(activation).write(target, predicted_logits, embeddings, eps)


class Bottleneck:
    """Concept outputs of a set of examples plus the model's label head: all an intervention needs.

    The backbone runs once; every edit afterwards only re-runs the (cheap) label head.

    Args:
        concept_logits: Per concept ``[N, C_k]`` predicted logits.
        label_head: Maps the concept part of the label-head input (and the residual, when there is one)
            to label logits ``[N, L]``.
        activation: What the label head reads: ``logits`` | ``probs`` | ``hard`` | ``embedding``.
        eps: See :func:`target_activation`.
        embeddings: Per concept ``[N, C_k, m]`` value embeddings (``embedding`` only).
        residual: ``[N, r]`` the unnamed channel of a hybrid bottleneck (never edited).
    """

    def __init__(self, concept_logits: list[torch.Tensor], label_head, activation: str, eps: float = LOGIT_EPS,
                 device: torch.device | str = "cpu", embeddings: list[torch.Tensor] | None = None,
                 residual: torch.Tensor | None = None):
        self.concept_logits = [lg.detach().float().cpu() for lg in concept_logits]
        self.embeddings = None if embeddings is None else [e.detach().float().cpu() for e in embeddings]
        self.residual = None if residual is None else residual.detach().float().cpu()
        self.label_head, self.activation, self.eps, self.device = label_head, activation, eps, device

    @classmethod
    def from_model(cls, model, concepts, eps: float = LOGIT_EPS) -> Bottleneck:
        """Use ``model``'s label head and activation (the head stays on its device).

        ``concepts``: a :class:`~sparsecbm.models.cbm.ConceptOutputs` (or concept logits alone, enough
        for a strict bottleneck reading logits, probs or hard).
        """
        from sparsecbm.models.cbm import as_outputs

        out = as_outputs(concepts)
        device = next(model.label_head.parameters()).device
        return cls(out.logits, model.label_from_inputs, model.activation, eps, device, out.embeddings, out.residual)

    @property
    def n_concepts(self) -> int:
        return len(self.concept_logits)

    @property
    def cardinalities(self) -> list[int]:
        return [lg.shape[-1] for lg in self.concept_logits]

    def concept_probs(self) -> list[torch.Tensor]:
        return [lg.softmax(-1) for lg in self.concept_logits]

    def inputs(self, targets: list[torch.Tensor | None] | None = None, masks=None) -> torch.Tensor:
        """Concept part of the label-head input ``[N, D]`` with ``targets`` written where ``masks`` is true."""
        targets = targets if targets is not None else [None] * self.n_concepts
        masks = masks if masks is not None else [None] * self.n_concepts
        return edited_inputs(self.concept_logits, self.activation, targets, masks, self.eps, self.embeddings)

    @torch.no_grad()
    def label_logits(self, inputs: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Label logits ``[N, L]`` (on CPU) from the concept part of the input (and the model's residual,
        or ``residual`` in its place)."""
        residual = self.residual if residual is None else residual
        args = (inputs.to(self.device),) if residual is None else (inputs.to(self.device), residual.to(self.device))
        return self.label_head(*args).float().cpu()

    @torch.no_grad()
    def label_probs(self, targets: list[torch.Tensor | None] | None = None, masks=None) -> torch.Tensor:
        """``[N, L]`` label distribution with concepts replaced by ``targets`` where ``masks`` is true."""
        return self.label_logits(self.inputs(targets, masks)).softmax(-1)
