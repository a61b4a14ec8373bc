"""What a train or evaluate run measured, as one object: :class:`RunResult`, saved as ``results.json``.

``train`` and ``evaluate`` build it here (:func:`stage_result` per split, then :meth:`RunResult.collect`);
``sparsecbm.tables``, ``sparsecbm.aggregate``, ``sparsecbm.tracking`` and the explorer read it back with
:meth:`RunResult.load`. The file keeps the keys and shape it always had, so older run folders still read;
keys this version does not know are kept in :attr:`RunResult.extra` and written back unchanged.

A ``RunResult`` is also a read-only mapping over those keys (``result["test"]["label"]["acc"]``), the way
callers of ``train(cfg)`` have always read its first return value.

Example:
    >>> result = RunResult.load("outputs/train/runs/2026-01-01_00-00-00")   # the folder or its results.json
    >>> result.metric("test/label/f1"), result.model["mode"]
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsecbm.jsonio import write_json
from sparsecbm.results import reference_baselines, split_metrics

FILENAME = "results.json"
#: The sections of ``results.json`` in the order they are written.
SECTIONS = ("val", "test", "run", "model", "data", "reference", "config", "evaluate_config", "subnetworks")


@dataclass(eq=True)
class RunResult(Mapping):
    """One run's ``results.json``.

    Attributes:
        run: Task name, output folder, seed, epochs, wall time, checkpoint(s), throughput.
        model: Training mode, bottleneck activation, label head, backbone (and pooling, parameter counts).
        config: The resolved config of the run that trained the model.
        val, test: Per split (``None`` when not evaluated): ``label``/``concept`` ``{acc, f1, f1_papers}``,
            ``per_concept``, ``loss`` and, from the bottleneck report, ``intervention`` / ``bottleneck``.
        data: What the data module read (:meth:`~sparsecbm.data.datamodule.CBMDataModule.describe`).
        reference: The data set's reference baselines (:func:`~sparsecbm.results.reference_baselines`).
        subnetworks: Concept subnetwork statistics of a sparse model.
        evaluate_config: An ``evaluate`` run's own config (``config`` is the trained run's).
        extra: Sections this version does not know, kept as read.
        path: The folder the result was loaded from or saved to (not written to the file).
    """

    run: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    subnetworks: dict[str, Any] | None = None
    evaluate_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    # --- building -------------------------------------------------------------------------------------
    @classmethod
    def collect(cls, *, stages: Mapping[str, dict[str, Any]], model, datamodule, ceiling, run: dict[str, Any],
                config: dict[str, Any], facts: dict[str, Any], evaluate_config: dict[str, Any] | None = None,
                subnetworks: dict[str, Any] | None = None) -> RunResult:
        """The one place a run's result is put together (``train`` and ``evaluate``).

        Args:
            stages: ``{"val": ..., "test": ...}`` from :func:`stage_result`.
            model: The :class:`~sparsecbm.models.cbm.ConceptBottleneckModel` (its mode and bottleneck activation).
            datamodule: The set-up data module (``describe()`` and the raw splits for the reference).
            ceiling: The fitted :class:`~sparsecbm.ceiling.ConceptCeiling` (fitted once per run).
            run: The ``run`` block (what differs between train and evaluate).
            config: The trained run's resolved config.
            facts: ``label_head``, ``backbone`` and any further model facts, after ``mode`` / ``activation``.
        """
        raw, cs = datamodule.raw, datamodule.concept_set
        return cls(
            run=dict(run),
            model={"mode": model.mode, "activation": model.activation if model.has_concepts else None, **facts},
            config=config,
            val=stages.get("val"),
            test=stages.get("test"),
            data=datamodule.describe(),
            reference=reference_baselines(raw["train"].concepts, raw["train"].labels, raw["test"].concepts,
                                          raw["test"].labels, cs.cardinalities, cs.label.num_classes,
                                          ceiling=ceiling),
            subnetworks=subnetworks,
            evaluate_config=evaluate_config,
        )

    # --- the file -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` structure (sections in :data:`SECTIONS` order; empty optional ones left out)."""
        out: dict[str, Any] = {}
        for key in SECTIONS:
            value = getattr(self, key)
            if value is not None or key in ("run", "model", "config"):
                out[key] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | Path | None = None) -> RunResult:
        """From a ``results.json`` structure; a section it lacks takes its default, unknown ones go to ``extra``."""
        known = {k: d[k] for k in SECTIONS if k in d}
        for key in ("run", "model", "config", "data", "reference"):
            if known.get(key) is None:
                known.pop(key, None)
        extra = {k: v for k, v in d.items() if k not in SECTIONS and k != "_path"}
        return cls(**known, extra=extra, path=Path(path) if path is not None else None)

    def save(self, path: str | Path) -> Path:
        """Write ``results.json`` atomically; ``path`` is a run folder or the file itself."""
        path = Path(path)
        file = path if path.suffix == ".json" else path / FILENAME
        write_json(file, self.to_dict())
        self.path = file.parent
        return file

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Read a run folder's ``results.json`` (or the file itself), from this or an earlier version.

        Raises:
            FileNotFoundError: no such file. ``json.JSONDecodeError`` / ``UnicodeDecodeError``: not JSON.
        """
        path = Path(path)
        file = path / FILENAME if path.is_dir() else path
        return cls.from_dict(json.loads(file.read_text()), file.parent)

    @classmethod
    def coerce(cls, result: RunResult | Mapping[str, Any]) -> RunResult:
        """``result`` itself, or a ``RunResult`` made from a ``results.json``-shaped mapping."""
        return result if isinstance(result, RunResult) else cls.from_dict(result, result.get("_path"))

    # --- reading --------------------------------------------------------------------------------------
    def split(self, name: str) -> dict[str, Any]:
        """The ``val`` or ``test`` block (``{}`` when that split was not evaluated)."""
        if name not in ("val", "test"):
            raise KeyError(f"no split '{name}' in a run result; expected val or test")
        return getattr(self, name) or {}

    def find(self, name: str) -> Any:
        """A measured value by its metric name, or ``None`` when the run did not report it.

        ``<split>/label/f1``, ``<split>/concept/acc``, ``<split>/concept/<concept>/<acc|f1>`` (per concept),
        ``<split>/loss``, and any deeper block of the split: ``test/bottleneck/hard/acc``,
        ``test/intervention/all_ground_truth/acc``.
        """
        stage, *rest = name.split("/")
        node: Any = self.split(stage) if stage in ("val", "test") else getattr(self, stage, None)
        if stage in ("val", "test") and len(rest) == 3 and rest[0] == "concept":
            rest = ["per_concept", rest[1], rest[2]]
        for part in rest:
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    def metric(self, name: str) -> float:
        """A logged metric's value (``val/label/f1``...); a ``KeyError`` naming the known ones when absent."""
        value = self.find(name)
        if not isinstance(value, (int, float)):
            known = sorted(f"{s}/{k}/{m}" for s in ("val", "test") for k in ("label", "concept")
                           for m in ("acc", "f1") if isinstance(self.split(s).get(k), Mapping))
            raise KeyError(f"optimized_metric='{name}' is not in this run's results; known: {known} "
                           "(and <split>/concept/<name>/<acc|f1>, <split>/loss)")
        return float(value)

    # --- read-only mapping over the results.json keys (callers of train(cfg) index it like the dict) ----
    def __getitem__(self, key: str) -> Any:
        d = self.to_dict()
        if key not in d:
            raise KeyError(key)
        return d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def stage_result(metrics: Mapping[str, float], stage: str, concept_names: list[str],
                 report: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One split's block: the logged metrics (:func:`~sparsecbm.results.split_metrics`) and the bottleneck
    report on it when one was computed (interventions, ceiling, leakage:
    :func:`sparsecbm.interpret.leakage.split_report`)."""
    out = split_metrics(metrics, stage, concept_names)
    if report:
        out.update(report)
    return out
