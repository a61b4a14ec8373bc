"""A constructed annotation corpus whose concepts are known: texts built from one sentence per concept value."""

from __future__ import annotations

import csv
from pathlib import Path

BANK = {
    "name": "toy",
    "concepts": [
        {"name": "food", "description": "food", "human_column": "food_h", "levels": 3,
         "values": {"Negative": ["food bland"], "Positive": ["food tasty"]}},
        {"name": "service", "description": "service",
         "values": {"Negative": ["service rude"], "Positive": ["service friendly"]}},
    ],
}
SENT = {"food": {"Negative": "The food was bland.", "Positive": "The food was tasty."},
        "service": {"Negative": "The service was rude.", "Positive": "The service was friendly."}}


def make_corpus(root: Path, n: int = 24) -> dict[str, list[dict[str, str]]]:
    """Texts built from known concept values; label = food positive. ``unknown`` = no sentence about it."""
    root.mkdir(parents=True, exist_ok=True)
    cycle = ["Negative", "Positive", "unknown"]
    out = {}
    for split in ("train", "dev", "test"):
        rows = []
        for i in range(n):
            food, service = cycle[i % 3], cycle[(i // 3) % 3]
            parts = ["We went on Monday."] + [SENT[c][v] for c, v in (("food", food), ("service", service))
                                               if v != "unknown"] + ["The weather was nice."]
            rows.append({"text": " ".join(parts), "label": "good" if food == "Positive" else "bad",
                         "food_h": food, "service_truth": service})
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        out[split] = rows
    return out
