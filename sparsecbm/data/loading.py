"""Read train/dev/test splits (local CSV/JSONL or the Hugging Face hub) and validate them.

Everything is read as strings through ``datasets`` and checked against a
:class:`~sparsecbm.concepts.ConceptSet`. Any problem raises :class:`DataError`
naming the file, line, column and value, and what was expected.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsecbm.concepts import ConceptSet

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """Bad input data: the message names the file, row/column and value, and what was expected."""


@dataclass
class EncodedSplit:
    """One validated split: parallel lists, plus how many rows were skipped and why."""

    source: str
    texts: list[str]
    labels: list[int]
    concepts: list[list[int]]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


def _read_local(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Return (columns, rows) of a CSV/TSV/JSON(L) file, every cell as read (strings for CSV)."""
    import datasets

    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=sep)
            header, first = next(reader, None), next(reader, None)
        if not header:
            raise DataError(f"{path}: file is empty (no header row)")
        if first is None:
            raise DataError(f"{path}: split is empty (no data rows)")
        # every cell as a string, empty cells as "" (no NaN, no int/float guessing)
        features = datasets.Features({name: datasets.Value("string") for name in header})
        kwargs = dict(features=features, keep_default_na=False, sep=sep)
        builder = "csv"
    elif suffix in (".jsonl", ".json"):
        kwargs, builder = {}, "json"
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}'; expected .csv, .tsv, .jsonl or .json")
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # datasets wraps parser errors in many types
        raise DataError(f"{path}: could not be parsed as {builder.upper()}: {e}") from e
    return list(ds.column_names), ds.to_list()


def _read_hub(name: str, split: str) -> tuple[list[str], list[dict[str, Any]]]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        raise DataError(
            f"could not load split '{split}' of '{name}' from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Without network, point data.root at a folder with train/dev/test files "
            "(see data/README.md)."
        ) from e
    return list(ds.column_names), ds.to_list()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def encode_rows(
    columns: list[str],
    rows: list[dict[str, Any]],
    concepts: ConceptSet,
    text_column: str,
    source: str,
    with_concepts: bool = True,
) -> EncodedSplit:
    """Validate rows and map them to label and concept indices.

    Rows whose label is in ``concepts.label.skip`` are skipped and counted.
    """
    if not rows:
        raise DataError(f"{source}: split is empty (no data rows)")
    needed = [text_column, concepts.label.column] + ([c.column for c in concepts] if with_concepts else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; the file has columns {columns}. "
            "Check data.text_column, data.label.column and data.concepts[*].column."
        )
    texts, labels, cvals, skipped = [], [], [], 0
    for i, row in enumerate(rows):
        where = f"{source}, row {i + 1}"
        raw_label = _cell(row[concepts.label.column])
        if raw_label in concepts.label.skip:
            skipped += 1
            continue
        if raw_label not in concepts.label.values:
            raise DataError(
                f"{where}, column '{concepts.label.column}': label '{raw_label}' is not one of "
                f"{list(concepts.label.values)} (rows with {list(concepts.label.skip)} are skipped)"
            )
        text = _cell(row[text_column])
        if not text:
            raise DataError(f"{where}, column '{text_column}': text is empty")
        values = []
        if with_concepts:
            for spec in concepts:
                raw = _cell(row[spec.column])
                try:
                    values.append(spec.index(raw))
                except KeyError:
                    raise DataError(
                        f"{where}, column '{spec.column}' (concept '{spec.name}'): value '{raw}' is not "
                        f"known; expected one of {spec.accepted()}"
                    ) from None
        texts.append(text)
        labels.append(concepts.label.values.index(raw_label))
        cvals.append(values)
    if not texts:
        raise DataError(f"{source}: split is empty after skipping {skipped} rows with labels {list(concepts.label.skip)}")
    return EncodedSplit(source=source, texts=texts, labels=labels, concepts=cvals, skipped=skipped)


def check_concept_columns(columns: list[str], concepts: ConceptSet, source: str, expected: int | None) -> None:
    """Fail when the config's concept count disagrees with the expected count for this dataset."""
    if expected is not None and len(concepts) != expected:
        raise DataError(
            f"{source}: the config lists {len(concepts)} concepts {concepts.names} but this dataset "
            f"expects {expected}; fix data.concepts or data.num_concepts"
        )


def load_splits(
    concepts: ConceptSet,
    text_column: str,
    root: str | None = None,
    files: Mapping[str, str] | None = None,
    hub: Mapping[str, Any] | None = None,
    default_root: str | None = None,
    num_concepts: int | None = None,
    with_concepts: bool = True,
) -> dict[str, EncodedSplit]:
    """Load and validate the train/dev/test splits.

    Source order: ``root`` if given; else ``default_root`` if it exists; else the hub.
    """
    files = dict(files or {s: f"{s}.csv" for s in SPLITS})
    if root is None and default_root is not None and Path(default_root).is_dir():
        root = default_root
        log.info("data: using local folder %s (default location)", root)
    elif root is not None:
        log.info("data: using local folder %s (data.root)", root)
    out: dict[str, EncodedSplit] = {}
    if root is not None:
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise DataError(f"data.root '{root}' is not a folder; expected a folder with {sorted(files.values())}")
        for split in SPLITS:
            path = root_path / files[split]
            columns, rows = _read_local(path)
            check_concept_columns(columns, concepts, str(path), num_concepts)
            out[split] = encode_rows(columns, rows, concepts, text_column, str(path), with_concepts)
        return out
    if not hub or not hub.get("name"):
        raise DataError(
            "no data source: data.root is not set, "
            f"{default_root or 'no default folder'} does not exist and no hub dataset is configured"
        )
    log.info("data: %s not found locally; loading '%s' from the Hugging Face hub", default_root, hub["name"])
    for split in SPLITS:
        hub_split = hub["splits"][split]
        columns, rows = _read_hub(hub["name"], hub_split)
        source = f"hub:{hub['name']}[{hub_split}]"
        out[split] = encode_rows(columns, rows, concepts, text_column, source, with_concepts)
    return out
