"""Concept interventions on a trained model: predict with a full explanation, edit, re-predict.

Example:
    >>> import sparsecbm
    >>> from sparsecbm.interpret import intervene
    >>> session = sparsecbm.load("outputs/train/runs/.../checkpoints/best.ckpt")
    >>> result = intervene(session, "The pasta was cold.", {"food": "Positive", "noise": "unknown"})
    >>> result.after.label, result.changed()
    ('4', {'concepts': ['food', 'noise'], 'label': {'before': '2', 'after': '4'}})
    >>> result.save("intervention.json")
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import InterventionError
from sparsecbm.interpret.strategies import LOGIT_EPS, STRATEGIES, Bottleneck

#: Kinds of intervention a result can record; ``mask`` (subnetwork level) will join ``concept``.
INTERVENTION_TYPES = ("concept",)


@dataclass
class Edit:
    """One intervention.

    Args:
        target: What is edited (a concept name; later also a mask/subnetwork name).
        strategy: ``hard`` (``value``), ``soft`` (``probs``) or ``ground_truth`` (``value`` = true value).
        value: The value name written (hard, ground truth).
        probs: The distribution written, in the concept's value order (soft; one-hot for hard).
        type: ``concept`` (the only type so far).
    """

    target: str
    strategy: str
    value: str | None = None
    probs: list[float] | None = None
    type: str = "concept"


@dataclass
class Prediction:
    """What the model predicts for one text, with every concept's distribution (the explanation)."""

    concept_probs: dict[str, dict[str, float]]
    concepts: dict[str, str]
    label_probs: dict[str, float]
    label: str


@dataclass
class InterventionResult:
    """Before/after predictions of one text under a list of edits."""

    text: str
    edits: list[Edit]
    before: Prediction
    after: Prediction
    meta: dict[str, Any] = field(default_factory=dict)

    def changed(self) -> dict[str, Any]:
        """Concepts whose predicted value changed, and the label change (``None`` if unchanged)."""
        concepts = [n for n in self.before.concepts if self.before.concepts[n] != self.after.concepts[n]]
        label = None if self.before.label == self.after.label else {"before": self.before.label, "after": self.after.label}
        return {"concepts": concepts, "label": label}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "intervention_result", **asdict(self), "changed": self.changed()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterventionResult:
        return cls(text=d["text"], edits=[Edit(**e) for e in d["edits"]], before=Prediction(**d["before"]),
                   after=Prediction(**d["after"]), meta=dict(d.get("meta", {})))

    def save(self, path: str | Path) -> Path:
        from sparsecbm.jsonio import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> InterventionResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def table(self):
        """A rich table: every concept and the label, before -> after, with probabilities."""
        from rich.table import Table

        edited = {e.target: e.strategy for e in self.edits}
        table = Table(title=f"intervention: {self.text[:70]}{'...' if len(self.text) > 70 else ''}")
        for col in ("", "edit", "before", "after"):
            table.add_column(col)

        def cell(pred: Prediction, name: str | None) -> str:
            if name is None:
                return f"{pred.label} ({100 * pred.label_probs[pred.label]:.0f}%)"
            value = pred.concepts[name]
            return f"{value} ({100 * pred.concept_probs[name][value]:.0f}%)"

        for name in self.before.concepts:
            table.add_row(name, edited.get(name, ""), cell(self.before, name), cell(self.after, name))
        table.add_row("label", "", cell(self.before, None), cell(self.after, None), style="bold")
        return table


# --------------------------------------------------------------------------- parsing
def parse_set(spec: Any, concepts: ConceptSet) -> list[Edit]:
    """Turn ``set`` (a mapping, or a YAML string like ``'{food: Positive, noise: unknown}'``) into edits.

    Each entry is ``concept: value`` (hard), ``concept: [p_1, ..., p_C]`` or
    ``concept: {value: p, ...}`` (soft; missing values get 0; must sum to 1).

    Raises:
        InterventionError: Unknown concept or value, malformed string or probability vector.
    """
    if spec is None:
        return []
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(spec, (DictConfig, ListConfig)):
            spec = OmegaConf.to_container(spec, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(spec, str):
        import yaml

        try:
            spec = yaml.safe_load(spec) if spec.strip() else {}
        except yaml.YAMLError as e:
            raise InterventionError(f"set={spec!r} is not valid YAML ({e}); expected e.g. '{{food: Positive}}'") from e
    if not isinstance(spec, Mapping):
        raise InterventionError(f"set={spec!r} must be a mapping concept -> value, e.g. '{{food: Positive, noise: unknown}}'")
    return [_edit(str(name), value, concepts) for name, value in spec.items()]


def _edit(name: str, value: Any, concepts: ConceptSet) -> Edit:
    if name not in concepts.names:
        raise InterventionError(f"unknown concept '{name}'; valid concepts: {concepts.names}")
    spec = concepts[name]
    valid = f"valid values of '{name}': {list(spec.values)}"
    if isinstance(value, Mapping):
        unknown = [v for v in value if str(v) not in spec.values]
        if unknown:
            raise InterventionError(f"unknown value(s) {unknown} for concept '{name}'; {valid}")
        value = [value.get(v, 0.0) for v in spec.values]
    if isinstance(value, Sequence) and not isinstance(value, str):
        order = f"(order {list(spec.values)})"
        if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in value):
            raise InterventionError(f"'{name}': probabilities must be numbers {order}, got {list(value)}")
        probs = [float(p) for p in value]
        if len(probs) != spec.cardinality:
            raise InterventionError(f"'{name}': a soft intervention needs {spec.cardinality} probabilities {order}, "
                                    f"got {len(probs)}: {probs}")
        if not all(math.isfinite(p) for p in probs):
            raise InterventionError(f"'{name}': probabilities must be finite numbers {order}, got {probs}")
        if min(probs) < 0:
            raise InterventionError(f"'{name}': probabilities must be non-negative {order}, got {probs}")
        if abs(sum(probs) - 1.0) > 1e-3:
            raise InterventionError(f"'{name}': probabilities must sum to 1 {order}, got {probs} "
                                    f"(sum {sum(probs):.4g})")
        return Edit(name, "soft", probs=[p / sum(probs) for p in probs])
    try:
        index = spec.index(value)
    except KeyError:
        if spec.ordered and isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(spec.levels):
            index = spec.values.index(spec.levels[value - 1])  # a graded concept: level 1..L, low to high
        else:
            levels = f" (graded: or a level 1..{len(spec.levels)}, low to high)" if spec.ordered else ""
            raise InterventionError(f"unknown value '{value}' for concept '{name}'; {valid}{levels}") from None
    return Edit(name, "hard", value=spec.values[index], probs=[float(i == index) for i in range(spec.cardinality)])


def ground_truth_edits(truth: Mapping[str, Any], concepts: ConceptSet) -> list[Edit]:
    """Edits that write the given true values (value names or indices), strategy ``ground_truth``."""
    edits = []
    for name, value in truth.items():
        value = concepts[name].values[value] if isinstance(value, int) else value
        edit = _edit(name, value, concepts)
        edits.append(Edit(edit.target, "ground_truth", value=edit.value, probs=edit.probs))
    return edits


# --------------------------------------------------------------------------- model side
def require_concepts(model) -> None:
    """Raise a clear error for a model without a concept bottleneck (``standard`` mode)."""
    if not model.has_concepts:
        raise InterventionError(
            f"this checkpoint is a '{model.mode}' model without concepts, so there is nothing to intervene "
            "on; interventions need cbm=cem, joint, sequential, independent, strict or hybrid"
        )


def edit_targets(edits: Sequence[Edit], concepts: ConceptSet, n: int) -> list[torch.Tensor | None]:
    """Per concept ``[n, C_k]`` target distributions (``None`` where no edit applies)."""
    targets: list[torch.Tensor | None] = [None] * len(concepts)
    for e in edits:
        if e.type not in INTERVENTION_TYPES or e.strategy not in STRATEGIES:
            raise InterventionError(f"unsupported edit {e}; types {INTERVENTION_TYPES}, strategies {STRATEGIES}")
        targets[concepts.position(e.target)] = torch.tensor(e.probs, dtype=torch.float32).expand(n, -1)
    return targets


def _prediction(concepts: ConceptSet, concept_probs: list[torch.Tensor], label_probs: torch.Tensor) -> Prediction:
    cp = {c.name: {v: float(p) for v, p in zip(c.values, concept_probs[k])} for k, c in enumerate(concepts)}
    return Prediction(
        concept_probs=cp,
        concepts={n: max(d, key=d.get) for n, d in cp.items()},
        label_probs={v: float(p) for v, p in zip(concepts.label.values, label_probs)},
        label=concepts.label.values[int(label_probs.argmax())],
    )


def intervene(session, texts: str | Sequence[str], set: Any = None,
              eps: float = LOGIT_EPS) -> InterventionResult | list[InterventionResult]:
    """Predict, apply the edits in ``set`` (see :func:`parse_set`) to every text, re-predict.

    Args:
        session: An :class:`~sparsecbm.session.InferenceSession` (``sparsecbm.load(ckpt_path)``): its model,
            tokenised like its training data.
        texts: One text or a list.
        set: ``{concept: value | [probs] | {value: prob}}`` or its YAML string; ``None`` only predicts.
        eps: Uniform mass mixed into a set distribution for ``logits`` models (see strategies).

    Returns:
        One :class:`InterventionResult` per text (a single one for a single text); ``meta["truncated"]``
        says whether the text was longer than the model reads.
    """
    require_concepts(session.model)
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    edits = parse_set(set, session.model.concepts)
    enc = session.encode(texts)
    results = intervene_outputs(session.model, texts, enc.outputs, edits, eps)
    for r, cut in zip(results, enc.truncated):
        r.meta.update({"max_length": session.max_length, "truncated": bool(cut)})
    return results[0] if single else results


def intervene_outputs(model, texts: Sequence[str], outputs, edits: Sequence[Edit],
                      eps: float = LOGIT_EPS) -> list[InterventionResult]:
    """:func:`intervene` on concept outputs already computed for ``texts`` (the backbone does not run).

    Args:
        model: The :class:`~sparsecbm.models.cbm.ConceptBottleneckModel` (its label head and concepts).
        outputs: :class:`~sparsecbm.models.cbm.ConceptOutputs` of ``texts`` (e.g. cached by a server).
        edits: From :func:`parse_set`.
    """
    require_concepts(model)
    concepts = model.concepts
    bottleneck = Bottleneck.from_model(model, outputs, eps)
    before_c = bottleneck.concept_probs()
    targets = edit_targets(edits, concepts, len(texts))
    after_c = [p if t is None else t for p, t in zip(before_c, targets)]
    before_y, after_y = bottleneck.label_probs(), bottleneck.label_probs(targets)
    results = [
        InterventionResult(
            text=t, edits=list(edits), meta={"mode": model.mode, "activation": model.activation, "logit_eps": eps},
            before=_prediction(concepts, [p[i] for p in before_c], before_y[i]),
            after=_prediction(concepts, [p[i] for p in after_c], after_y[i]),
        )
        for i, t in enumerate(texts)
    ]
    return results
