"""A sparse concept->label layer refitted on a fixed concept extractor (the library half of
``python -m sparsecbm.label_refit``): the label head's inputs over a split, and refits of the head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecbm.models.cbm import Collected, concept_activations
from sparsecbm.models.label_sparsity import TopKConceptLinear, concept_blocks


def activations(model, split: Collected) -> tuple[torch.Tensor, torch.Tensor]:
    """The label head's full input over a split (concept activations, then the residual channel if any;
    from the model's collected outputs, :func:`sparsecbm.session.collect`) and the labels."""
    out = split.outputs
    x = concept_activations(out.logits, model.activation, out.embeddings)
    return (x if out.residual is None else torch.cat([x, out.residual], dim=-1)), split.labels


def refit(
    head: torch.nn.Linear, x, y, l1: float = 0.0, steps: int = 300, lr: float = 1e-2
) -> torch.nn.Linear:
    """Adam on the cross-entropy (+ ``l1`` x sum |W|) of ``head`` on fixed inputs ``x`` and labels ``y``."""
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(head(x), y) + l1 * head.weight.abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def concepts_per_label(head, cardinalities, eps: float = 1e-2) -> list[int]:
    """Per label, the number of concepts whose weight block has a norm above ``eps``."""
    w = head.weight * head.mask() if isinstance(head, TopKConceptLinear) else head.weight
    norms = torch.stack([w[:, s].norm(dim=1) for s in concept_blocks(cardinalities)], 1)
    return (norms > eps).sum(1).tolist()
