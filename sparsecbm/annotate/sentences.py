"""Sentence splitting for concept annotation (pysbd, the rule-based segmenter of the Golden Rules set)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=4)
def _segmenter(language: str):
    import pysbd

    return pysbd.Segmenter(language=language, clean=False)


def split_sentences(text: str, language: str = "en", max_chars: int = 600) -> list[str]:
    """Split ``text`` into sentences (whitespace normalised, empty pieces dropped).

    Abbreviations, decimals and ellipses do not end a sentence (pysbd's rules). A piece longer than
    ``max_chars`` (run-on text without punctuation) is cut further at ``;``/``,`` or whitespace, so one
    sentence never exceeds what a sentence encoder reads. A text with no sentence boundary is one sentence.

    Example:
        >>> split_sentences("Dr. Smith ate at 8.30 p.m. The food was great! Service, slow.")
        ['Dr. Smith ate at 8.30 p.m.', 'The food was great!', 'Service, slow.']
    """
    text = _SPACE.sub(" ", str(text)).strip()
    if not text:
        return []
    pieces = [p.strip() for p in _segmenter(language).segment(text)]
    out: list[str] = []
    for p in pieces:
        if p:
            out.extend(_cut(p, max_chars))
    return out or [text]


def flatten_sentences(texts: Sequence[str], language: str = "en") -> tuple[list[str], np.ndarray]:
    """Every text's sentences in one list and ``[n_sentences]`` the index of the text each came from
    (a text with no sentence contributes itself, so every text owns at least one)."""
    out, owner = [], []
    for i, text in enumerate(texts):
        parts = split_sentences(text, language) or [str(text)]
        out.extend(parts)
        owner.extend([i] * len(parts))
    return out, np.asarray(owner, dtype=int)


def per_text_mean(values: np.ndarray, owner: np.ndarray, n_texts: int) -> np.ndarray:
    """``[n_texts, ...]`` the mean of ``values`` (one row per sentence, grouped by text in order) per text."""
    starts = np.searchsorted(owner, np.arange(n_texts))
    counts = np.diff(np.r_[starts, len(owner)]).reshape((-1,) + (1,) * (values.ndim - 1))
    return np.add.reduceat(values, starts, axis=0) / counts


def _cut(piece: str, max_chars: int) -> list[str]:
    if len(piece) <= max_chars:
        return [piece]
    for sep in ("; ", ", ", " "):
        cut = piece.rfind(sep, 0, max_chars)
        if cut > max_chars // 4:
            head, tail = piece[: cut + len(sep)].strip(), piece[cut + len(sep):].strip()
            return [head] + _cut(tail, max_chars)
    return [piece[:max_chars]] + _cut(piece[max_chars:], max_chars)
