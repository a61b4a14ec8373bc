"""The concept-bottleneck model: backbone -> per-concept logits -> label from concepts only.

What the label head reads is set by ``activation``: ``logits``, ``probs``, ``hard`` (one-hot,
straight-through) or ``embedding`` (concept embeddings in the style of Concept Embedding Models,
Espinosa Zarlenga et al. 2022: every value of every concept has a context-dependent embedding and
the concept's activation is their mix weighted by the predicted probabilities). An optional
``residual_dim`` adds an unnamed channel beside the concepts (a *hybrid* bottleneck, less
interpretable: see :mod:`sparsecbm.models.residual`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsecbm.concepts import ConceptSet
from sparsecbm.models.backbone import pool
from sparsecbm.models.bottleneck import ACTIVATIONS, mix_embeddings, read_all  # noqa: F401  (mix_embeddings re-exported)

MODES = ("standard", "joint", "sequential", "independent")
LABEL_HEADS = ("linear", "mlp")


@dataclass
class ConceptOutputs:
    """Everything the label head may read for a batch, before any intervention.

    Args:
        logits: Per concept ``[B, C_k]``.
        embeddings: Per concept ``[B, C_k, m]`` value embeddings (``activation=embedding`` only).
        residual: ``[B, r]`` the unnamed channel of a hybrid bottleneck (``residual_dim > 0`` only).
        pooler: What the token pooler returned besides the features (e.g. ``gates``, ``weights``:
            ``[K, B, T]``), ``None`` without a token pooler. Read it with ``model.token_pooler.token_weights``.
    """

    logits: list[torch.Tensor]
    embeddings: list[torch.Tensor] | None = None
    residual: torch.Tensor | None = None
    pooler: dict[str, torch.Tensor] | None = None

    def apply(self, fn) -> ConceptOutputs:
        """A copy with ``fn`` applied to every tensor (e.g. ``lambda t: t.detach().cpu()``)."""
        return ConceptOutputs([fn(t) for t in self.logits],
                              None if self.embeddings is None else [fn(t) for t in self.embeddings],
                              None if self.residual is None else fn(self.residual),
                              None if self.pooler is None else {k: fn(v) for k, v in self.pooler.items()})

    @classmethod
    def cat(cls, parts: list[ConceptOutputs]) -> ConceptOutputs:
        """Concatenate batches along the example dimension (``pooler`` is per batch and not kept)."""
        first = parts[0]
        return cls([torch.cat([p.logits[k] for p in parts]) for k in range(len(first.logits))],
                   None if first.embeddings is None else
                   [torch.cat([p.embeddings[k] for p in parts]) for k in range(len(first.embeddings))],
                   None if first.residual is None else torch.cat([p.residual for p in parts]))


@dataclass
class Collected:
    """A model's outputs over a data split (:func:`sparsecbm.session.collect`), float32 on the CPU.

    Args:
        outputs: Concept outputs ``[N, ...]`` (``None`` for a model without concepts).
        truth: ``[N, K]`` true concept values (``None`` when the data has no concepts).
        labels: ``[N]`` true labels.
        label_logits: ``[N, L]`` the model's label logits.
    """

    outputs: ConceptOutputs | None
    truth: torch.Tensor | None
    labels: torch.Tensor
    label_logits: torch.Tensor


@dataclass
class CBMOutput:
    """Model outputs. ``concept_logits`` holds one ``[B, card_k]`` tensor per concept (empty for standard)."""

    label_logits: torch.Tensor
    concept_logits: list[torch.Tensor]
    concept_inputs: torch.Tensor | None = None  # the concept part of what the label head read
    concept_embeddings: list[torch.Tensor] | None = None  # activation=embedding: per concept [B, C_k, m]
    residual: torch.Tensor | None = None  # hybrid bottleneck: the unnamed channel [B, r]
    pooler: dict[str, torch.Tensor] | None = None  # token pooler extras (gates, attention weights): [K, B, T]

    @property
    def outputs(self) -> ConceptOutputs:
        return ConceptOutputs(self.concept_logits, self.concept_embeddings, self.residual, self.pooler)


def as_outputs(concepts: list[torch.Tensor] | ConceptOutputs | CBMOutput) -> ConceptOutputs:
    """Concept logits alone, :class:`ConceptOutputs` or :class:`CBMOutput` -> :class:`ConceptOutputs`."""
    if isinstance(concepts, CBMOutput):
        return concepts.outputs
    return concepts if isinstance(concepts, ConceptOutputs) else ConceptOutputs(list(concepts))


def concept_activations(
    concept_logits: list[torch.Tensor], kind: str, embeddings: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Turn per-concept logits into the concept part of the label head's input.

    ``hard`` is the one-hot of the argmax with a straight-through gradient; ``embedding`` is the
    probability-weighted mix of the value embeddings (``[B, K * m]``; needs ``embeddings``).
    The other kinds give ``[B, sum(card_k)]``. One class per kind: :mod:`sparsecbm.models.bottleneck`.
    """
    return read_all(concept_logits, kind, embeddings)


def concept_cross_entropies(concept_logits: list[torch.Tensor], concepts: torch.Tensor,
                            weights: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Every concept's cross-entropy, concept ``k`` class-weighted by ``weights[k]`` (``None``: unweighted).

    The one definition of a concept's loss: training (the mean over concepts,
    :func:`sparsecbm.lit.losses.concept_loss`) and the subnetwork scorers (each concept's own term) both
    read it, so a mask is chosen by the loss its concept trains on (``cbm.concept_class_weight``).

    Args:
        concept_logits: ``K`` tensors ``[B, C_k]``.
        concepts: ``[B, K]`` true value indices.
        weights: Per concept ``[C_k]`` class weights or ``None``; ``None`` for all: unweighted.

    Returns:
        ``K`` scalar losses.
    """
    return [F.cross_entropy(lg, concepts[:, k], weight=None if not weights or (w := weights[k]) is None else w.to(lg))
            for k, lg in enumerate(concept_logits)]


def one_hot_concepts(values: torch.Tensor, cardinalities: list[int], dtype=torch.float32) -> torch.Tensor:
    """``[B, K]`` value indices -> concatenated one-hots ``[B, sum(card)]``."""
    return torch.cat([F.one_hot(values[:, k], c).to(dtype) for k, c in enumerate(cardinalities)], dim=-1)


class ConceptHeads(nn.Module):
    """One linear classifier per concept; reads shared ``[B, H]`` or per-concept ``[K, B, H]`` features."""

    def __init__(self, hidden: int, cardinalities: list[int], dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(hidden, c) for c in cardinalities)

    def single(self, concept: int, features: torch.Tensor) -> torch.Tensor:
        """Logits of one concept from its ``[B, H]`` features."""
        return self.heads[concept](self.dropout(features))

    def encode(self, features: torch.Tensor) -> tuple[list[torch.Tensor], None]:
        """Per-concept logits (and no embeddings)."""
        return self(features), None

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        per_concept = features.dim() == 3
        return [head(self.dropout(features[k] if per_concept else features)) for k, head in enumerate(self.heads)]


class ConceptEmbeddingHeads(nn.Module):
    """Concept Embedding Model heads: per concept and value a context-dependent embedding of dim ``m``.

    Concept ``k`` maps its features (its own subnetwork's pooled state when there is one) to ``C_k``
    embeddings ``e_{k,v} = LeakyReLU(W_{k,v} h)``; its logits score each value's embedding with a
    per-concept linear scorer, so the concept loss trains the embeddings too. The label head reads the
    probability-weighted mix (:func:`mix_embeddings`); an intervention writes a chosen value's embedding.
    """

    def __init__(self, hidden: int, cardinalities: list[int], dim: int = 16, dropout: float = 0.1):
        super().__init__()
        if dim < 1:
            raise ValueError(f"cbm.embedding_dim must be >= 1; got {dim}")
        self.cardinalities, self.dim = list(cardinalities), int(dim)
        self.dropout = nn.Dropout(dropout)
        self.embedders = nn.ModuleList(nn.Linear(hidden, c * dim) for c in cardinalities)
        self.scorers = nn.ModuleList(nn.Linear(dim, 1) for _ in cardinalities)

    def embed(self, concept: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, H]`` -> (logits ``[B, C_k]``, value embeddings ``[B, C_k, m]``) of one concept."""
        emb = F.leaky_relu(self.embedders[concept](self.dropout(features)))
        emb = emb.view(*emb.shape[:-1], self.cardinalities[concept], self.dim)
        return self.scorers[concept](emb).squeeze(-1), emb

    def single(self, concept: int, features: torch.Tensor) -> torch.Tensor:
        return self.embed(concept, features)[0]

    def encode(self, features: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        per_concept = features.dim() == 3
        pairs = [self.embed(k, features[k] if per_concept else features) for k in range(len(self.cardinalities))]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return self.encode(features)[0]


def make_label_head(kind: str, n_in: int, n_out: int, hidden: int = 64, dropout: float = 0.0) -> nn.Module:
    if kind == "linear":
        return nn.Linear(n_in, n_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))
    raise ValueError(f"unknown label head '{kind}'; expected one of {LABEL_HEADS}")


class ConceptBottleneckModel(nn.Module):
    """Backbone -> concept heads -> label head (or backbone -> label head in ``standard`` mode).

    The label head's input is the concept activations, one block per concept (``C_k`` columns, or
    ``embedding_dim`` for ``embedding``), followed by the residual channel when ``residual_dim > 0``.

    Args:
        backbone: A module mapping ``(input_ids, attention_mask)`` to pooled features ``[B, H]``,
            or ``[K, B, H]`` when each concept has its own subnetwork.
        concepts: Concept metadata.
        mode: ``standard`` | ``joint`` | ``sequential`` | ``independent``.
        activation: What the label head reads: ``logits`` | ``probs`` | ``hard`` | ``embedding``.
        label_head: ``linear`` | ``mlp``.
        token_pooler: Optional module ``(states, attention_mask) -> (features [K, B, H], extras)``
            replacing the backbone's pooling for concepts (e.g. learned per-concept token gates).
        embedding_dim: Size ``m`` of every concept-value embedding (``activation=embedding``).
        residual_dim: Width of the unnamed residual channel (0 = a strict bottleneck).
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
        embedding_dim: int = 16,
        residual_dim: int = 0,
    ):
        super().__init__()
        from sparsecbm.models.residual import ResidualChannel

        if mode not in MODES:
            raise ValueError(f"cbm.mode='{mode}' is not valid; expected one of {MODES}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"cbm.activation='{activation}' is not valid; expected one of {ACTIVATIONS}")
        if mode == "independent" and activation in ("logits", "embedding"):
            raise ValueError(
                "cbm.mode=independent trains the label head on one-hot true concepts, so it must read "
                f"cbm.activation=probs or hard at test time, not {activation}"
                + (" (concept embeddings: use cbm.mode=joint with cbm.train_intervention_prob)"
                   if activation == "embedding" else "")
            )
        if residual_dim < 0 or (residual_dim and mode in ("standard", "independent")):
            raise ValueError(f"cbm.residual_dim={residual_dim}: a residual channel needs cbm.mode=joint or "
                             f"sequential (got {mode}) and a width >= 0")
        self.backbone, self.concepts = backbone, concepts
        self.token_pooler = token_pooler
        self.mode, self.activation = mode, activation
        self.residual_dim = int(residual_dim)
        self.residual_head = None
        hidden = backbone.hidden_size
        n_labels = concepts.label.num_classes
        if mode == "standard":
            self.concept_heads = None
            self.dropout = nn.Dropout(dropout)
            self.label_head = make_label_head(label_head, hidden, n_labels, mlp_hidden)
            self.block_widths: list[int] = []
        else:
            if activation == "embedding":
                self.concept_heads = ConceptEmbeddingHeads(hidden, concepts.cardinalities, embedding_dim, dropout)
                self.block_widths = [int(embedding_dim)] * len(concepts.cardinalities)
            else:
                self.concept_heads = ConceptHeads(hidden, concepts.cardinalities, dropout)
                self.block_widths = list(concepts.cardinalities)
            if self.residual_dim:
                self.residual_head = ResidualChannel(hidden, self.residual_dim, dropout)
            self.label_head = make_label_head(label_head, sum(self.block_widths) + self.residual_dim, n_labels,
                                              mlp_hidden)

    @property
    def has_concepts(self) -> bool:
        return self.concept_heads is not None

    @property
    def sparse(self) -> bool:
        """Every concept has its own masked subnetwork of the backbone (``sparsity=...``)."""
        return bool(getattr(self.backbone, "sparse", False))

    def concept_blocks(self) -> list[slice]:
        """Column slice of each concept in the label head's input."""
        from sparsecbm.models.label_sparsity import concept_blocks

        return concept_blocks(self.block_widths)

    @property
    def residual_block(self) -> slice | None:
        """Column slice of the residual channel in the label head's input (``None`` without one)."""
        start = sum(self.block_widths)
        return slice(start, start + self.residual_dim) if self.residual_dim else None

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(pooled features the concept heads read — ``[B, H]`` shared or ``[K, B, H]`` per concept —,
        the token pooler's extras or ``None``)."""
        return self.pool_tokens(self.backbone.token_states(input_ids, attention_mask), attention_mask)

    def concept_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features the concept heads read: ``[B, H]`` shared, or ``[K, B, H]`` per concept."""
        return self.encode(input_ids, attention_mask)[0]

    def pool_tokens(self, states: torch.Tensor, attention_mask: torch.Tensor):
        """Token states ``[B, T, H]`` or ``[K, B, T, H]`` -> (concept features ``[B, H]`` or ``[K, B, H]``,
        the token pooler's extras or ``None``)."""
        if self.token_pooler is not None:
            return self.token_pooler(states, attention_mask)
        return pool(states, attention_mask, self.backbone.pooling), None

    def pool_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states -> concept features (see :meth:`pool_tokens`)."""
        return self.pool_tokens(states, attention_mask)[0]

    def bottleneck(self, features: torch.Tensor, pooler: dict[str, torch.Tensor] | None = None) -> ConceptOutputs:
        """Concept features ``[B, H]`` / ``[K, B, H]`` -> logits, value embeddings, residual (+ ``pooler``)."""
        logits, embeddings = self.concept_heads.encode(features)
        residual = self.residual_head(features) if self.residual_head is not None else None
        return ConceptOutputs(logits, embeddings, residual, pooler)

    def concept_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ConceptOutputs:
        """Everything the label head reads, and the token pooler's extras (see :class:`ConceptOutputs`)."""
        return self.bottleneck(*self.encode(input_ids, attention_mask))

    def concept_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        return self.concept_heads(self.concept_features(input_ids, attention_mask))

    def single_concept_logits(self, concept: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Concept ``concept``'s logits from a pass through its own subnetwork alone (per-concept backbones)."""
        states = self.backbone.concept_states(concept, input_ids, attention_mask)
        features = self.pool_states(states, attention_mask)
        if features.dim() == 3:
            features = features[concept]
        return self.concept_heads.single(concept, features)

    def label_from_inputs(self, inputs: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Label logits from the concept part of the label head's input (activations or one-hots)
        and, for a hybrid bottleneck, the residual ``[B, r]``."""
        if self.residual_dim:
            if residual is None:
                raise ValueError("this model has a residual channel (cbm.residual_dim > 0): pass the residual too")
            inputs = torch.cat([inputs, residual.to(inputs.dtype)], dim=-1)
        return self.label_head(inputs)

    def label_from_outputs(self, outputs: ConceptOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(label logits, concept part of the label head's input) from un-intervened outputs."""
        inputs = concept_activations(outputs.logits, self.activation, outputs.embeddings)
        return self.label_from_inputs(inputs, outputs.residual), inputs

    def label_from_concepts(self, concepts: list[torch.Tensor] | ConceptOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`label_from_outputs`; concept logits alone suffice for logits/probs/hard without residual."""
        return self.label_from_outputs(as_outputs(concepts))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CBMOutput:
        if not self.has_concepts:
            pooled = self.backbone(input_ids, attention_mask)
            return CBMOutput(self.label_head(self.dropout(pooled)), [])
        outputs = self.concept_outputs(input_ids, attention_mask)
        label_logits, inputs = self.label_from_outputs(outputs)
        return CBMOutput(label_logits, outputs.logits, inputs, outputs.embeddings, outputs.residual, outputs.pooler)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``backbone``, ``concept`` heads, ``label`` head and ``residual`` channel."""
        groups = {"backbone": list(self.backbone.parameters()), "label": list(self.label_head.parameters())}
        groups["concept"] = list(self.concept_heads.parameters()) if self.has_concepts else []
        if self.token_pooler is not None:  # token gates train with the concept heads
            groups["concept"] += list(self.token_pooler.parameters())
        groups["residual"] = list(self.residual_head.parameters()) if self.residual_head is not None else []
        return groups
