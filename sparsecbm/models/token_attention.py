"""Per-concept attention pooling: each concept reads the review through its own softmax over tokens.

Why: with one mean-pooled vector for all concepts, "the food was great but the waiter was rude" gives
food and service the same features, and each concept head has to untangle them. An aspect-based
sentiment model instead lets every aspect attend to its own words. Here concept ``k`` has a learned
query ``q_k``; its features are the attention-weighted mean of the token states. The queries start
at zero, so an untrained pooler *is* mean pooling (the backbone's own pooling for MiniLM), and
training only moves a concept's weight onto the tokens that help predict it. The weights are an
input-level explanation that needs no extra pass: which tokens each concept read, and how much.

Unlike :class:`~sparsecbm.models.token_gates.HardConcreteTokenGates` no token is cut (no budget,
no exact zeros), so it costs no accuracy; use gates when a concept must read few tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecbm.models.token_pooler import TokenPooler


class ConceptAttentionPooler(TokenPooler):
    """A ``token_pooler`` for :class:`~sparsecbm.models.cbm.ConceptBottleneckModel`.

    Args:
        hidden: Size of the token states.
        n_concepts: Number of concepts ``K``.

    Accepts shared states ``[B, T, H]`` or per-concept states ``[K, B, T, H]`` (one subnetwork per
    concept) and returns ``(features [K, B, H], extras)`` with ``extras = {"scores": [K, B, T],
    "attention": [K, B, T]}``: the attention logits (``-inf`` on padding) and weights (rows sum to 1
    over real tokens, exactly 0 on padding).

    Example:
        >>> pooler = ConceptAttentionPooler(hidden=384, n_concepts=4)
        >>> features, extras = pooler(states, attention_mask)   # [4, B, 384]; extras["attention"]: [4, B, T]
    """

    method = "attention"
    weights_key = scores_key = "attention"  # no penalty: attention pooling keeps every token

    def __init__(self, hidden: int, n_concepts: int):
        super().__init__()
        # an unscaled dot product: with the usual 1/sqrt(H), queries trained at the concept heads' rate
        # stayed near uniform attention after 5 CEBaB epochs (query norm about 1, logit spread about 0.5)
        self.query = nn.Parameter(torch.zeros(n_concepts, hidden))

    def scores(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Attention logits ``[K, B, T]``, ``-inf`` on padding."""
        query = self.query.to(states.dtype)
        if states.dim() == 3:
            scores = torch.einsum("bth,kh->kbt", states, query)
        else:
            scores = torch.einsum("kbth,kh->kbt", states, query)
        real = attention_mask.bool().unsqueeze(0)
        return scores.masked_fill(~real, float("-inf"))

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor):
        scores = self.scores(states, attention_mask)
        # a row with no real token (empty text) would be all -inf: give it zero weights, not NaN
        weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)
        if states.dim() == 3:
            features = torch.einsum("kbt,bth->kbh", weights, states)
        else:
            features = torch.einsum("kbt,kbth->kbh", weights, states)
        return features, {"scores": scores, "attention": weights}
