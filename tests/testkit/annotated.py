"""A small annotated folder: the tiny CEBaB fixture annotated by a deterministic bag-of-words embedder with a
2-concept bank (food, graded in 5 levels, and staff). conftest's ``annotated`` fixture builds it once per module."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from testkit import TINY_DATA

LABEL = {"column": "review_majority", "values": ["1", "2", "3", "4", "5"], "skip": ["no majority"]}
BANK = {"name": "tiny", "concepts": [
    {"name": "food", "description": "the food", "human_column": "food_aspect_majority", "levels": 5,
     "values": {"Negative": ["the food was bland", "my steak was overcooked"],
                "Positive": ["the food was delicious", "the pasta was perfect"]}},
    {"name": "staff", "description": "the staff",
     "values": {"Negative": ["the waitress ignored us"], "Positive": ["the staff were friendly"]}}]}


class HashWords:
    """Hashed bag of words (64 dims), L2-normalised: deterministic, no model."""

    name = path = "hash-words"

    def embed(self, texts, description=""):
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def annotate_tiny(out: Path) -> Path:
    """Annotate the tiny CEBaB fixture into ``out`` (food graded in 5 levels, staff machine-only)."""
    from sparsecbm.annotate import annotate_folder
    from sparsecbm.annotate.bank import ConceptBank
    from sparsecbm.concepts import ConceptSpec

    human = [ConceptSpec("food", "food_aspect_majority", ("Negative", "Positive", "unknown"),
                         {"no majority": "unknown", "": "unknown"})]
    annotate_folder(TINY_DATA, ConceptBank.from_dict(BANK), out, "description", LABEL, human, embedder=HashWords(),
                    calibration="threshold")
    return out
