"""Build the token pooler a ``cbm`` config names (``cbm.tokens``: none | gates | attention)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from sparsecbm.models.cbm_config import CBMConfig


def build_token_pooler(cbm: CBMConfig | Mapping[str, Any], hidden: int, n_concepts: int) -> nn.Module | None:
    """The token pooler named by ``cbm.tokens`` (``none`` | ``gates`` | ``attention``), or ``None``;
    ``cbm`` is a :class:`CBMConfig` or a mapping of its keys (see :meth:`CBMConfig.token_pooler`)."""
    return CBMConfig.coerce(cbm).token_pooler(hidden, n_concepts)
