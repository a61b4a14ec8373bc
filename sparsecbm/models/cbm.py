"""The concept-bottleneck model: backbone -> per-concept logits -> label from concepts only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsecbm.concepts import ConceptSet
from sparsecbm.models.backbone import pool

MODES = ("standard", "joint", "sequential", "independent")
ACTIVATIONS = ("logits", "probs", "hard")
LABEL_HEADS = ("linear", "mlp")


@dataclass
class CBMOutput:
    """Model outputs. ``concept_logits`` holds one ``[B, card_k]`` tensor per concept (empty for standard)."""

    label_logits: torch.Tensor
    concept_logits: list[torch.Tensor]
    concept_inputs: torch.Tensor | None = None  # what the label head read, ``[B, sum(card)]``


def concept_activations(concept_logits: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Turn per-concept logits into the label head's input, ``[B, sum(card_k)]``.

    ``hard`` is the one-hot of the argmax with a straight-through gradient.
    """
    if kind == "logits":
        parts = concept_logits
    elif kind == "probs":
        parts = [lg.softmax(-1) for lg in concept_logits]
    elif kind == "hard":
        parts = []
        for lg in concept_logits:
            p = lg.softmax(-1)
            hard = F.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)
            parts.append(hard + p - p.detach())
    else:
        raise ValueError(f"unknown concept activation '{kind}'; expected one of {ACTIVATIONS}")
    return torch.cat(parts, dim=-1)


def one_hot_concepts(values: torch.Tensor, cardinalities: list[int], dtype=torch.float32) -> torch.Tensor:
    """``[B, K]`` value indices -> concatenated one-hots ``[B, sum(card)]``."""
    return torch.cat([F.one_hot(values[:, k], c).to(dtype) for k, c in enumerate(cardinalities)], dim=-1)


class ConceptHeads(nn.Module):
    """One linear classifier per concept; reads shared ``[B, H]`` or per-concept ``[K, B, H]`` features."""

    def __init__(self, hidden: int, cardinalities: list[int], dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(hidden, c) for c in cardinalities)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        per_concept = features.dim() == 3
        return [head(self.dropout(features[k] if per_concept else features)) for k, head in enumerate(self.heads)]


def make_label_head(kind: str, n_in: int, n_out: int, hidden: int = 64, dropout: float = 0.0) -> nn.Module:
    if kind == "linear":
        return nn.Linear(n_in, n_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))
    raise ValueError(f"unknown label head '{kind}'; expected one of {LABEL_HEADS}")


class ConceptBottleneckModel(nn.Module):
    """Backbone -> concept heads -> label head (or backbone -> label head in ``standard`` mode).

    Args:
        backbone: A module mapping ``(input_ids, attention_mask)`` to pooled features ``[B, H]``,
            or ``[K, B, H]`` when each concept has its own subnetwork.
        concepts: Concept metadata.
        mode: ``standard`` | ``joint`` | ``sequential`` | ``independent``.
        activation: What the label head reads: ``logits`` | ``probs`` | ``hard``.
        label_head: ``linear`` | ``mlp``.
        token_pooler: Optional module ``(states, attention_mask) -> (features [K, B, H], extras)``
            replacing the backbone's pooling for concepts (e.g. learned per-concept token gates).
    """

    def __init__(
        self,
        backbone: nn.Module,
        concepts: ConceptSet,
        mode: str = "joint",
        activation: str = "logits",
        label_head: str = "linear",
        mlp_hidden: int = 64,
        dropout: float = 0.1,
        token_pooler: nn.Module | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"cbm.mode='{mode}' is not valid; expected one of {MODES}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"cbm.activation='{activation}' is not valid; expected one of {ACTIVATIONS}")
        if mode == "independent" and activation == "logits":
            raise ValueError(
                "cbm.mode=independent trains the label head on one-hot true concepts, so it must read "
                "cbm.activation=probs or hard at test time, not logits"
            )
        self.backbone, self.concepts = backbone, concepts
        self.token_pooler = token_pooler
        self.last_pooler_extras = None  # what the token pooler returned on the last forward (e.g. gates)
        self.mode, self.activation = mode, activation
        hidden = backbone.hidden_size
        n_labels = concepts.label.num_classes
        if mode == "standard":
            self.concept_heads = None
            self.dropout = nn.Dropout(dropout)
            self.label_head = make_label_head(label_head, hidden, n_labels, mlp_hidden)
        else:
            self.concept_heads = ConceptHeads(hidden, concepts.cardinalities, dropout)
            self.label_head = make_label_head(label_head, sum(concepts.cardinalities), n_labels, mlp_hidden)

    @property
    def has_concepts(self) -> bool:
        return self.concept_heads is not None

    def concept_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features the concept heads read: ``[B, H]`` shared, or ``[K, B, H]`` per concept."""
        return self.pool_states(self.backbone.token_states(input_ids, attention_mask), attention_mask)

    def pool_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states ``[B, T, H]`` or ``[K, B, T, H]`` -> concept features ``[B, H]`` or ``[K, B, H]``."""
        if self.token_pooler is not None:
            features, self.last_pooler_extras = self.token_pooler(states, attention_mask)
            return features
        return pool(states, attention_mask, self.backbone.pooling)

    def concept_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        return self.concept_heads(self.concept_features(input_ids, attention_mask))

    def single_concept_logits(self, concept: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Concept ``concept``'s logits from a pass through its own subnetwork alone (per-concept backbones)."""
        states = self.backbone.concept_states(concept, input_ids, attention_mask)
        features = self.pool_states(states, attention_mask)
        if features.dim() == 3:
            features = features[concept]
        return self.concept_heads.heads[concept](self.concept_heads.dropout(features))

    def label_from_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Label logits from a label-head input ``[B, sum(card)]`` (activations or one-hots)."""
        return self.label_head(inputs)

    def label_from_concepts(self, concept_logits: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = concept_activations(concept_logits, self.activation)
        return self.label_head(inputs), inputs

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CBMOutput:
        if not self.has_concepts:
            pooled = self.backbone(input_ids, attention_mask)
            return CBMOutput(self.label_head(self.dropout(pooled)), [])
        logits = self.concept_logits(input_ids, attention_mask)
        label_logits, inputs = self.label_from_concepts(logits)
        return CBMOutput(label_logits, logits, inputs)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``backbone``, ``concept`` heads and ``label`` head."""
        groups = {"backbone": list(self.backbone.parameters()), "label": list(self.label_head.parameters())}
        groups["concept"] = list(self.concept_heads.parameters()) if self.has_concepts else []
        if self.token_pooler is not None:  # token gates train with the concept heads
            groups["concept"] += list(self.token_pooler.parameters())
        return groups
