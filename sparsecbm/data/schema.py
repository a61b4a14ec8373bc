"""``concepts.yaml``: a data folder's own schema (text and label columns, concepts, their values).

A folder that carries a ``concepts.yaml`` is read with ``data=annotated data.root=DIR``; the annotator
writes one, and users can write one by hand::

    text_column: text
    label: {column: label, values: [neg, pos], skip: []}
    files: {train: train.csv, dev: dev.csv, test: test.csv}      # optional (these are the defaults)
    concepts:
      - {name: price, column: price, values: [Negative, Positive, unknown], source: human}
      - name: food_grade                                         # graded: ordered levels
        column: machine_food_grade
        values: ["1", "2", "3", "4", "5", unknown]
        ordered: true
        unordered: [unknown]                                     # outside the order
        source: machine

``aliases`` (raw string -> value name) may be given per concept or once at the top level.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sparsecbm.concepts import ConceptSet
from sparsecbm.data.loading import SPLITS, DataError

SCHEMA_FILE = "concepts.yaml"
SOURCES = ("human", "machine")
_TOP = {"text_column", "label", "files", "concepts", "aliases", "name", "annotation"}
_CONCEPT = {"name", "column", "values", "aliases", "ordered", "unordered", "source", "description"}


@dataclass
class FolderSchema:
    """What ``concepts.yaml`` says about a data folder.

    Args:
        text_column: Column holding the text.
        label: ``{column, values, skip}``.
        concepts: Concept entries (``name, column, values[, aliases, ordered, unordered]``), in order.
        sources: Concept name -> ``human`` or ``machine``.
        files: File name per split.
        extra: Other top-level entries (``name``, ``annotation`` provenance).
    """

    text_column: str
    label: dict[str, Any]
    concepts: list[dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=lambda: {s: f"{s}.csv" for s in SPLITS})
    extra: dict[str, Any] = field(default_factory=dict)

    def concept_set(self) -> ConceptSet:
        return ConceptSet.from_config(self.concepts, self.label, values=["Negative", "Positive", "unknown"])

    def to_dict(self) -> dict[str, Any]:
        concepts = []
        for c in self.concepts:
            entry = {k: c[k] for k in ("name", "column", "values") if k in c}
            for k in ("aliases", "ordered", "unordered", "description"):
                if c.get(k):
                    entry[k] = c[k]
            entry["source"] = self.sources.get(c["name"], "human")
            concepts.append(entry)
        return {**self.extra, "text_column": self.text_column, "label": dict(self.label),
                "files": dict(self.files), "concepts": concepts}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SCHEMA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110))
        return path


def _fail(path: Path, msg: str) -> DataError:
    return DataError(f"{path}: {msg}")


def read_schema(folder: str | Path) -> FolderSchema:
    """Read and check ``folder/concepts.yaml`` (fields, value lists, and that every column exists in the
    split files' headers). Values in the rows are checked by the loader (file, row, column, value)."""
    folder = Path(folder).expanduser()
    path = folder / SCHEMA_FILE
    if not folder.is_dir():
        raise DataError(f"data.root '{folder}' is not a folder; expected a folder with {SCHEMA_FILE} and split files")
    if not path.is_file():
        raise DataError(f"{path} not found: data=annotated reads a folder that carries its own {SCHEMA_FILE} "
                        "(written by python -m sparsecbm.annotate, or by hand: see data/README.md)")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise _fail(path, f"not valid YAML: {e}") from e
    if not isinstance(d, Mapping):
        raise _fail(path, "expected a mapping with text_column, label and concepts")
    bad = sorted(set(d) - _TOP)
    if bad:
        raise _fail(path, f"unknown top-level field(s) {bad}; expected some of {sorted(_TOP)}")
    for key in ("text_column", "label"):
        if not d.get(key):
            raise _fail(path, f"missing '{key}'")
    label = d["label"]
    if not isinstance(label, Mapping) or not label.get("column") or not label.get("values"):
        raise _fail(path, "'label' needs 'column' and 'values' (and optionally 'skip')")
    label = {"column": str(label["column"]), "values": [str(v) for v in label["values"]],
             "skip": [str(v) for v in label.get("skip") or []]}
    files = {**{s: f"{s}.csv" for s in SPLITS}, **dict(d.get("files") or {})}
    if set(files) - set(SPLITS):
        raise _fail(path, f"files: unknown split(s) {sorted(set(files) - set(SPLITS))}; expected {list(SPLITS)}")
    shared_aliases = {str(k): str(v) for k, v in (d.get("aliases") or {}).items()}
    concepts, sources = [], {}
    for i, c in enumerate(d.get("concepts") or []):
        if not isinstance(c, Mapping) or not c.get("name"):
            raise _fail(path, f"concepts[{i}] needs a 'name'")
        name = str(c["name"])
        where = f"concept '{name}'"
        bad = sorted(set(c) - _CONCEPT)
        if bad:
            raise _fail(path, f"{where}: unknown field(s) {bad}; expected some of {sorted(_CONCEPT)}")
        if not c.get("values") or not isinstance(c["values"], list):
            raise _fail(path, f"{where}: 'values' must be a list of value names")
        source = str(c.get("source", "human"))
        if source not in SOURCES:
            raise _fail(path, f"{where}: source '{source}' is not one of {list(SOURCES)}")
        entry = {"name": name, "column": str(c.get("column", name)), "values": [str(v) for v in c["values"]],
                 "aliases": {**shared_aliases, **{str(k): str(v) for k, v in (c.get("aliases") or {}).items()}}}
        entry["aliases"] = {k: v for k, v in entry["aliases"].items() if v in entry["values"] and k not in entry["values"]}
        if c.get("ordered"):
            entry["ordered"] = True
            entry["unordered"] = [str(v) for v in c.get("unordered") or []]
        elif c.get("unordered"):
            raise _fail(path, f"{where}: 'unordered' needs ordered: true")
        for k in ("unordered",):
            stray = [v for v in entry.get(k, []) if v not in entry["values"]]
            if stray:
                raise _fail(path, f"{where}: {k} value(s) {stray} are not in its values {entry['values']}")
        if c.get("description"):
            entry["description"] = str(c["description"])
        concepts.append(entry)
        sources[name] = source
    schema = FolderSchema(text_column=str(d["text_column"]), label=label, concepts=concepts, sources=sources,
                          files=files, extra={k: d[k] for k in ("name", "annotation") if k in d})
    try:
        schema.concept_set()
    except ValueError as e:
        raise _fail(path, str(e)) from e
    _check_columns(folder, schema, path)
    return schema


def _header(file: Path) -> list[str] | None:
    if file.suffix.lower() not in (".csv", ".tsv") or not file.is_file():
        return None  # JSONL or missing: the loader checks it
    with open(file, newline="", encoding="utf-8") as f:
        return next(csv.reader(f, delimiter="\t" if file.suffix.lower() == ".tsv" else ","), None)


def _check_columns(folder: Path, schema: FolderSchema, path: Path) -> None:
    for split in SPLITS:
        file = folder / schema.files[split]
        header = _header(file)
        if header is None:
            continue
        wanted = [("text_column", schema.text_column), ("label.column", schema.label["column"])]
        wanted += [(f"concept '{c['name']}'", c["column"]) for c in schema.concepts]
        for what, column in wanted:
            if column not in header:
                raise DataError(f"{path}: {what} names column '{column}', which {file} does not have; "
                                f"its columns are {header}")


def annotated_datamodule(root: str, **kwargs: Any):
    """A :class:`~sparsecbm.data.CBMDataModule` for a folder described by its ``concepts.yaml``.

    Args:
        root: The folder.
        **kwargs: Every other :class:`~sparsecbm.data.CBMDataModule` argument (tokenizer, batch sizes, ...).
    """
    from sparsecbm.data.datamodule import CBMDataModule

    schema = read_schema(root)
    for key in ("text_column", "label", "concepts", "concept_values", "concept_aliases", "files", "hub",
                "default_root", "num_concepts"):
        kwargs.pop(key, None)
    return CBMDataModule(text_column=schema.text_column, label=schema.label, concepts=schema.concepts,
                         concept_values=["Negative", "Positive", "unknown"], root=str(root), files=schema.files,
                         **kwargs)
