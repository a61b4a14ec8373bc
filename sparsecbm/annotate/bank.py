"""Concept banks: per concept a name, a description and example phrases per value (a YAML file)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sparsecbm.config import CONF_DIR
from sparsecbm.errors import ConfigError


class BankError(ConfigError):
    """A concept bank that cannot be used: the message names the file, concept and field."""


@dataclass(frozen=True)
class BankConcept:
    """One concept of a bank.

    Args:
        name: Concept name (also the machine column's stem).
        description: What the concept is about, in words.
        values: Value name -> example phrases, in value order (``unknown`` is added after them).
        human_column: Data column with human labels for this concept, if any (calibration, agreement).
        levels: Number of ordered levels of the graded copy ``<name>_grade`` (0: none). Needs exactly
            two polar values (negative first, positive second).
        grade_by: The graded score: ``best`` (polarity of the best-matching sentence) or ``mean`` (polarity
            averaged over all sentences: the text's overall tone on the concept).
    """

    name: str
    description: str
    values: Mapping[str, tuple[str, ...]]
    human_column: str | None = None
    levels: int = 0
    grade_by: str = "best"

    @property
    def value_names(self) -> list[str]:
        return list(self.values)


@dataclass(frozen=True)
class ConceptBank:
    """A list of :class:`BankConcept` plus the name of the "not mentioned" value."""

    name: str
    concepts: tuple[BankConcept, ...]
    unknown: str = "unknown"
    source: str = ""

    def __len__(self) -> int:
        return len(self.concepts)

    def __getitem__(self, name: str) -> BankConcept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise KeyError(f"concept bank '{self.name}' has no concept '{name}'; it has {[c.name for c in self.concepts]}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "unknown": self.unknown, "concepts": []}
        for c in self.concepts:
            entry: dict[str, Any] = {"name": c.name, "description": c.description}
            if c.human_column:
                entry["human_column"] = c.human_column
            if c.levels:
                entry["levels"] = c.levels
            if c.grade_by != "best":
                entry["grade_by"] = c.grade_by
            entry["values"] = {v: list(p) for v, p in c.values.items()}
            out["concepts"].append(entry)
        return out

    def digest(self) -> str:
        """sha256 of the bank's content (provenance: same digest, same bank)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, path: str | Path, header: str = "") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)
        path.write_text(header + text)
        return path

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> ConceptBank:
        if not isinstance(d, Mapping) or not isinstance(d.get("concepts"), list) or not d["concepts"]:
            raise BankError(f"{source}: a concept bank needs a non-empty list 'concepts'")
        unknown = str(d.get("unknown", "unknown"))
        concepts, seen = [], set()
        for i, entry in enumerate(d["concepts"]):
            where = f"{source}, concepts[{i}]"
            if not isinstance(entry, Mapping) or not entry.get("name"):
                raise BankError(f"{where}: each concept needs a 'name'")
            name = str(entry["name"])
            where = f"{source}, concept '{name}'"
            if name in seen:
                raise BankError(f"{where}: duplicate concept name")
            seen.add(name)
            unknown_keys = set(entry) - {"name", "description", "values", "human_column", "levels", "grade_by"}
            if unknown_keys:
                raise BankError(f"{where}: unknown field(s) {sorted(unknown_keys)}; expected name, description, "
                                "values, human_column, levels, grade_by")
            values = entry.get("values")
            if not isinstance(values, Mapping) or len(values) < 1:
                raise BankError(f"{where}: 'values' must map each value name to example phrases")
            vals: dict[str, tuple[str, ...]] = {}
            for v, phrases in values.items():
                phrases = [phrases] if isinstance(phrases, str) else list(phrases or [])
                if not phrases or not all(isinstance(p, str) and p.strip() for p in phrases):
                    raise BankError(f"{where}, value '{v}': needs at least one non-empty example phrase")
                if str(v) == unknown:
                    raise BankError(f"{where}: value '{v}' is the bank's 'unknown' value, which has no phrases")
                vals[str(v)] = tuple(p.strip() for p in phrases)
            levels = int(entry.get("levels") or 0)
            if levels and (levels < 2 or len(vals) != 2):
                raise BankError(f"{where}: levels={levels} needs exactly two polar values (negative, positive) and "
                                f"levels >= 2; it has values {list(vals)}")
            grade_by = str(entry.get("grade_by", "best"))
            if grade_by not in ("best", "mean"):
                raise BankError(f"{where}: grade_by '{grade_by}' is not valid; expected best or mean")
            concepts.append(BankConcept(name=name, description=str(entry.get("description") or name), values=vals,
                                        human_column=entry.get("human_column") or None, levels=levels,
                                        grade_by=grade_by))
        return cls(name=str(d.get("name", Path(source).stem)), concepts=tuple(concepts), unknown=unknown,
                   source=source)


def bank_path(name_or_path: str | Path) -> Path:
    """``cebab`` -> the shipped ``conf/concept_bank/cebab.yaml``; a path is used as given."""
    p = Path(str(name_or_path)).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise BankError(f"concept bank file not found: {p}")
        return p
    shipped = Path(CONF_DIR) / "concept_bank" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        names = sorted(f.stem for f in (Path(CONF_DIR) / "concept_bank").glob("*.yaml"))
        raise BankError(f"bank='{name_or_path}' is neither a YAML file nor a shipped bank; shipped banks: {names}")
    return shipped


def load_bank(name_or_path: str | Path) -> ConceptBank:
    """Read a concept bank by shipped name (``cebab``, ``imdb``) or path."""
    path = bank_path(name_or_path)
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BankError(f"{path}: not valid YAML: {e}") from e
    return ConceptBank.from_dict(d, str(path))
