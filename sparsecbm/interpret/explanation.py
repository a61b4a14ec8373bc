"""Explanation results: dataclasses with ``to_dict`` / ``from_dict`` and JSON ``save`` / ``load``.

One :class:`Explanation` per example holds the three levels of the SparseCBM explanation:

- input level: the tokens and, per concept, one score per token (plus the gate values when the
  model has token gates);
- concept level: concept probabilities, and each concept's contribution to the predicted label's
  logit (the label layer's weights times the concept activations, summed per concept);
- subnetwork level: ``subnetwork`` is ``None`` for models without per-concept weight masks.
  HOOK for ``sparsecbm/sparsity``: fill it with a JSON-able summary (e.g. ``{"density":
  {concept: {layer: kept fraction}}, "overlap": [[...]]}``); the report draws a heatmap of
  ``subnetwork["density"]`` when present.

An :class:`ExplanationSet` adds what holds for the whole model: the label layer (per label, the
concepts and value weights it uses), the attribution method and the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class ConceptExplanation:
    """One concept on one example."""

    name: str
    values: list[str]
    probs: list[float]
    predicted: str
    token_scores: list[float]  # one per token of Explanation.tokens (0 on special tokens)
    gates: list[float] | None = None  # what the concept read of each token: its gates or attention weights
    true: str | None = None
    levels: list[str] | None = None  # a graded concept: its ordered values, low to high (others: None)

    def level(self, value: str | None = None) -> int | None:
        """1-based level of ``value`` (default: the predicted one); ``None`` outside the order."""
        value = self.predicted if value is None else value
        return self.levels.index(value) + 1 if self.levels and value in self.levels else None

    def expected_level(self) -> float | None:
        """The mean level under the predicted distribution, given a level (graded concepts)."""
        if not self.levels:
            return None
        mass = [(i + 1, self.probs[self.values.index(v)]) for i, v in enumerate(self.levels)]
        total = sum(p for _, p in mass)
        return sum(i * p for i, p in mass) / total if total > 0 else None


@dataclass
class Explanation:
    """One example: tokens, concepts, concept->label contributions, subnetwork summary, prediction."""

    text: str
    tokens: list[str]
    concepts: list[ConceptExplanation]
    label_values: list[str]
    label_probs: list[float]
    predicted_label: str
    contributions: dict[str, float] | None  # concept -> contribution to the predicted label's logit
    label_bias: float | None = None
    true_label: str | None = None
    subnetwork: dict[str, Any] | None = None  # HOOK: per-concept weight-mask summary (sparsecbm/sparsity)

    def concept(self, name: str) -> ConceptExplanation:
        return next(c for c in self.concepts if c.name == name)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        d = dict(d)
        d["concepts"] = [ConceptExplanation(**c) for c in d["concepts"]]
        return cls(**d)


@dataclass
class LabelConcept:
    """How one label reads one concept: a weight per concept value and their L2 norm."""

    concept: str
    weights: dict[str, float]
    norm: float


@dataclass
class ExplanationSet:
    """Explanations of a batch of examples plus the model-level label-layer summary."""

    explanations: list[Explanation]
    method: str
    checkpoint: str | None = None
    label_layer: dict[str, list[LabelConcept]] | None = None  # label -> concepts it uses (norm > 0), by norm
    label_sparsity: str | None = None
    token_gates: dict[str, Any] | None = None  # budget and measured kept fraction, when the model has gates
    subnetwork: dict[str, Any] | None = None  # HOOK: model-level weight-mask summary (sparsecbm/sparsity)
    meta: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __len__(self) -> int:
        return len(self.explanations)

    def __getitem__(self, i: int) -> Explanation:
        return self.explanations[i]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExplanationSet:
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        d["explanations"] = [Explanation.from_dict(e) for e in d["explanations"]]
        if d.get("label_layer") is not None:
            d["label_layer"] = {lab: [LabelConcept(**c) for c in cs] for lab, cs in d["label_layer"].items()}
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ExplanationSet:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def show(self, i: int = 0, top: int = 5) -> str:
        """A short text summary of example ``i``: prediction, concepts and their top tokens."""
        e = self.explanations[i]
        lines = [f"{e.text!r} -> {e.predicted_label}"]
        for c in e.concepts:
            ranked = sorted(range(len(e.tokens)), key=lambda t: -c.token_scores[t])[:top]
            contrib = f" contribution {e.contributions[c.name]:+.2f}" if e.contributions else ""
            lines.append(
                f"  {c.name}={c.predicted} ({max(c.probs):.2f}){contrib}: "
                + " ".join(e.tokens[t] for t in ranked)
            )
        return "\n".join(lines)
