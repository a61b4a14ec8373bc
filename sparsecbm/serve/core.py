"""The explorer's value types: request limits and the error a request is answered with."""

from __future__ import annotations

from dataclasses import dataclass


class ExplorerError(ValueError):
    """A request the explorer cannot serve; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """Request limits (``conf/serve.yaml: limits``)."""

    max_text_chars: int = 20_000
    max_body_bytes: int = 262_144
    cache_size: int = 256
    max_examples: int = 200
    split_batch_size: int = 8
