"""Token poolers: how each concept reads the token states (``cbm.tokens``: none | gates | attention).

:class:`TokenPooler` is the base every pooler shares; :meth:`~sparsecbm.models.cbm_config.CBMConfig.token_pooler`
builds the one a config names.
The concrete poolers live in :mod:`~sparsecbm.models.token_gates` and :mod:`~sparsecbm.models.token_attention`.
"""

from __future__ import annotations

import torch
from torch import nn

TOKEN_POOLERS = ("none", "gates", "attention")


class TokenPooler(nn.Module):
    """What every ``token_pooler`` shares: ``forward(states, attention_mask) -> (features [K, B, H], extras)``,
    and which ``extras`` entries say how much each concept reads each token (``weights_key``) and rank the
    tokens for attribution (``scores_key``). ``method`` names the attribution method that reads them."""

    method = ""
    weights_key = ""
    scores_key = ""

    def token_weights(self, extras: dict[str, torch.Tensor]) -> torch.Tensor:
        """How much each concept reads each token, ``[K, B, T]``."""
        return extras[self.weights_key]

    def token_scores(self, extras: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token relevance for attribution, ``[K, B, T]``."""
        return extras[self.scores_key]

    def penalty(self, extras: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The pooler's term in the training loss (``None``: none)."""
        return None
