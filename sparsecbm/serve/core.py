"""The explorer's value types: request limits, one encoded text, and the error a request is answered with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsecbm.models.cbm import ConceptOutputs


class ExplorerError(ValueError):
    """A request the explorer cannot serve; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Encoded:
    """One text after the backbone: what every later edit of it reads (never modified)."""

    text: str
    batch: dict[str, torch.Tensor]  # input_ids / attention_mask [1, T]
    tokens: list[str]
    outputs: ConceptOutputs  # on CPU, float
    token_weights: torch.Tensor | None  # [K, T]: what each concept read of each token (attention / gates)
    truncated: bool
    ms: float  # backbone + heads, milliseconds


@dataclass
class Limits:
    """Request limits (``conf/serve.yaml: limits``)."""

    max_text_chars: int = 20_000
    max_body_bytes: int = 262_144
    cache_size: int = 256
    max_examples: int = 200
