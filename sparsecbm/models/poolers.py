"""Build the token pooler a ``cbm`` config names (``cbm.tokens``: none | gates | attention)."""

from __future__ import annotations

from torch import nn

from sparsecbm.models.token_attention import ConceptAttentionPooler
from sparsecbm.models.token_gates import HardConcreteTokenGates
from sparsecbm.models.token_pooler import TOKEN_POOLERS


def build_token_pooler(cbm: dict, hidden: int, n_concepts: int) -> nn.Module | None:
    """The token pooler named by ``cbm.tokens`` (``none`` | ``gates`` | ``attention``), or ``None``."""
    kind = cbm.get("tokens", "none") or "none"
    if kind == "none":
        return None
    if kind in TOKEN_POOLERS and cbm.get("mode") == "standard":
        raise ValueError(f"cbm.tokens={kind} needs concepts; cbm.mode=standard has none")
    if kind == "attention":
        return ConceptAttentionPooler(hidden, n_concepts)
    if kind == "gates":
        return HardConcreteTokenGates(
            hidden,
            n_concepts,
            budget=float(cbm.get("token_budget", 0.2)),
            penalty=float(cbm.get("token_penalty", 1.0)),
            init_open=float(cbm.get("token_init_open", 1.0)),
        )
    raise ValueError(f"cbm.tokens='{kind}' is not valid; expected one of {TOKEN_POOLERS}")
