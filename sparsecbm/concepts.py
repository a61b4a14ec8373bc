"""Concept and label metadata shared by data, model, losses, metrics and reports.

One frozen :class:`ConceptSet` is built from the data config, stored in every
checkpoint, and is the only place that knows concept names, their values and
how raw strings in a data file map to value indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparsecbm.errors import ConfigError


@dataclass(frozen=True)
class ConceptSpec:
    """One concept: its name, the data column it is read from and its value names.

    Args:
        name: Short name used in configs, metrics and reports (``food``).
        column: Column of the data file holding the raw value (``food_aspect_majority``).
        values: Value names in index order (``("Negative", "Positive", "unknown")``).
        aliases: Extra raw strings and the value name they mean (``{"no majority": "unknown"}``).
        ordered: The values are graded levels in index order (``("1", ..., "5", "unknown")``), except those
            in ``unordered``; metrics then add the mean absolute level error and interventions accept a level.
        unordered: Values outside the order (``("unknown",)``: the concept is not mentioned).
    """

    name: str
    column: str
    values: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    ordered: bool = False
    unordered: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) < 2:
            raise ConfigError(f"concept '{self.name}' needs at least two values, got {list(self.values)}")
        if len(set(self.values)) != len(self.values):
            raise ConfigError(f"concept '{self.name}' has duplicate values: {list(self.values)}")
        for raw, target in self.aliases.items():
            if target not in self.values:
                raise ConfigError(
                    f"concept '{self.name}': alias '{raw}' -> '{target}' names no value; "
                    f"expected one of {list(self.values)}"
                )
        object.__setattr__(self, "values", tuple(self.values))
        object.__setattr__(self, "aliases", dict(self.aliases))
        object.__setattr__(self, "unordered", tuple(str(v) for v in self.unordered))
        stray = [v for v in self.unordered if v not in self.values]
        if stray:
            raise ValueError(f"concept '{self.name}': unordered value(s) {stray} are not values {list(self.values)}")
        if self.unordered and not self.ordered:
            raise ValueError(f"concept '{self.name}': 'unordered' {list(self.unordered)} needs ordered: true")
        if self.ordered and len(self.levels) < 2:
            raise ValueError(f"concept '{self.name}': an ordered concept needs at least two levels, "
                             f"got {list(self.levels)}")

    @property
    def cardinality(self) -> int:
        return len(self.values)

    def index(self, raw: Any) -> int:
        """Map a raw value (or a value name) to its index; raise ``KeyError`` if unknown."""
        key = "" if raw is None else str(raw).strip()
        if key in self.values:
            return self.values.index(key)
        if key in self.aliases:
            return self.values.index(self.aliases[key])
        raise KeyError(key)

    @property
    def levels(self) -> tuple[str, ...]:
        """The ordered values (all values but ``unordered``); empty for an unordered concept."""
        return tuple(v for v in self.values if v not in self.unordered) if self.ordered else ()

    def rank(self, index: int) -> int | None:
        """Position of value ``index`` among the levels (0 = lowest); ``None`` outside the order."""
        value = self.values[index]
        return self.levels.index(value) if value in self.levels else None

    def accepted(self) -> list[str]:
        return list(self.values) + [a for a in self.aliases if a not in self.values]


@dataclass(frozen=True)
class LabelSpec:
    """The task label: its column, class names in index order and raw values whose rows are skipped."""

    column: str
    values: tuple[str, ...]
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))
        object.__setattr__(self, "skip", tuple(str(v) for v in self.skip))
        if len(self.values) < 2:
            raise ConfigError(f"label needs at least two classes, got {list(self.values)}")

    @property
    def num_classes(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class ConceptSet:
    """All concepts of a dataset plus its label; iterable over :class:`ConceptSpec`."""

    concepts: tuple[ConceptSpec, ...]
    label: LabelSpec

    def __post_init__(self) -> None:
        object.__setattr__(self, "concepts", tuple(self.concepts))
        names = [c.name for c in self.concepts]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate concept names: {names}")

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self):
        return iter(self.concepts)

    def __getitem__(self, key: int | str) -> ConceptSpec:
        if isinstance(key, str):
            return self.concepts[self.position(key)]
        return self.concepts[key]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    @property
    def cardinalities(self) -> list[int]:
        return [c.cardinality for c in self.concepts]

    def position(self, name: str) -> int:
        for i, c in enumerate(self.concepts):
            if c.name == name:
                return i
        raise KeyError(f"unknown concept '{name}'; valid concepts: {self.names}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "concepts": [
                {"name": c.name, "column": c.column, "values": list(c.values), "aliases": dict(c.aliases),
                 **({"ordered": True, "unordered": list(c.unordered)} if c.ordered else {})}
                for c in self.concepts
            ],
            "label": {"column": self.label.column, "values": list(self.label.values), "skip": list(self.label.skip)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptSet:
        return cls(
            concepts=tuple(ConceptSpec(**{**dict(c), "unordered": tuple(c.get("unordered", ()))}) for c in d["concepts"]),
            label=LabelSpec(**dict(d["label"])),
        )

    @classmethod
    def from_config(
        cls,
        concepts: Sequence[Mapping[str, Any]],
        label: Mapping[str, Any],
        values: Sequence[str],
        aliases: Mapping[str, str] | None = None,
    ) -> ConceptSet:
        """Build from a data config: concept entries may override the shared ``values``/``aliases``."""
        specs = []
        for entry in concepts:
            entry = dict(entry)
            if "name" not in entry:
                raise ConfigError(f"concept entry {entry} has no 'name'")
            specs.append(
                ConceptSpec(
                    name=str(entry["name"]),
                    column=str(entry.get("column", entry["name"])),
                    values=tuple(entry.get("values", values)),
                    # a concept with its own values does not inherit the shared aliases
                    aliases=dict(entry.get("aliases", {} if "values" in entry else (aliases or {}))),
                    ordered=bool(entry.get("ordered", False)),
                    unordered=tuple(entry.get("unordered", ())),
                )
            )
        return cls(concepts=tuple(specs), label=LabelSpec(**dict(label)))
