"""Read train/dev/test splits (local CSV/JSONL or the Hugging Face hub) and validate them.

Files are read by :mod:`sparsecbm.data.files` (local) and :mod:`sparsecbm.data.hub` (the hub), every
cell a string, and checked here against a :class:`~sparsecbm.concepts.ConceptSet`. Any problem raises :class:`DataError`
naming the file, line, column and value, and what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsecbm.concepts import ConceptSet
from sparsecbm.data.files import DELIMITER_NAMES, RawTable, _read_local, read_table
from sparsecbm.data.hub import (
    _offline,
    _read_hub,
    hub_reachable,
    hub_unreachable_message,
    no_source_message,
    preflight,
)
from sparsecbm.errors import DataError

__all__ = ["DELIMITER_NAMES", "MISSING_CONCEPT", "SPLITS", "DataError", "EncodedSplit", "RawTable", "_offline",
           "_read_local", "check_concept_columns", "encode_rows", "hub_reachable", "hub_unreachable_message",
           "load_splits", "preflight", "read_table"]

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


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


#: ``data.missing_concept``: an empty or absent concept cell is an error, or means the value ``unknown``.
MISSING_CONCEPT = ("error", "unknown")


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
    lines: list[int | None] | None = None,
    missing_concept: str = "error",
) -> EncodedSplit:
    """Validate rows and map them to label and concept indices.

    Rows whose label is in ``concepts.label.skip`` are skipped and counted. An empty or absent concept
    cell (with no alias for ``""``) is an error, or the value ``unknown`` with ``missing_concept="unknown"``.
    ``lines`` (the file line of each row) makes messages say ``line N``; without it they say ``row N``.
    """
    if missing_concept not in MISSING_CONCEPT:
        raise DataError(f"data.missing_concept='{missing_concept}' is not valid; expected one of {list(MISSING_CONCEPT)}")
    if not rows:
        raise DataError(f"{source}: split is empty (no data rows)")
    needed = [text_column, concepts.label.column] + ([c.column for c in concepts] if with_concepts else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        hint = (" The header parsed as one column: is data.delimiter right?" if len(columns) == 1 else "")
        raise DataError(
            f"{source}: missing column(s) {missing}; the file has columns {columns}. "
            f"Check data.text_column, data.label.column and data.concepts[*].column.{hint}"
        )
    if with_concepts and missing_concept == "unknown":
        lacking = [c.name for c in concepts if "unknown" not in c.values]
        if lacking:
            raise DataError(f"data.missing_concept=unknown, but concept(s) {lacking} have no value 'unknown'; "
                            "add it to their values or set data.missing_concept=error")
    texts, labels, cvals, skipped = [], [], [], 0
    for i, row in enumerate(rows):
        line = lines[i] if lines is not None else None
        where = f"{source}, line {line}" if line is not None else f"{source}, row {i + 1}"
        if row.get(concepts.label.column) is None:
            raise DataError(f"{where}: the label field '{concepts.label.column}' is missing; expected one of "
                            f"{list(concepts.label.values)}")
        raw_label = _cell(row[concepts.label.column])
        if raw_label in concepts.label.skip:
            skipped += 1
            continue
        if raw_label not in concepts.label.values:
            raise DataError(
                f"{where}, column '{concepts.label.column}': label '{raw_label}' is not one of "
                f"{list(concepts.label.values)} (rows with {list(concepts.label.skip)} are skipped)"
            )
        text = _cell(row.get(text_column))
        if not text:
            raise DataError(f"{where}, column '{text_column}': text is "
                            + ("missing" if row.get(text_column) is None else "empty"))
        values = []
        if with_concepts:
            for spec in concepts:
                cell = row.get(spec.column)
                raw = _cell(cell)
                if raw == "" and "" not in spec.aliases and "" not in spec.values:
                    if missing_concept == "unknown":
                        values.append(spec.values.index("unknown"))
                        continue
                    state = "missing" if cell is None else "empty"
                    raise DataError(
                        f"{where}, column '{spec.column}' (concept '{spec.name}'): the value is {state}; expected "
                        f"one of {spec.accepted()}. If a missing value means 'unknown', pass "
                        "data.missing_concept=unknown"
                    )
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
    encoding: str | None = "utf-8",
    delimiter: str | None = None,
    missing_concept: str = "error",
) -> dict[str, EncodedSplit]:
    """Load and validate the train/dev/test splits.

    Source order: ``root`` if given; else ``default_root`` if it exists; else the hub. ``encoding`` and
    ``delimiter`` apply to local files (:func:`read_table`), ``missing_concept`` to every row
    (:func:`encode_rows`).
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
            table = read_table(path, encoding, delimiter)
            check_concept_columns(table.columns, concepts, str(path), num_concepts)
            out[split] = encode_rows(table.columns, table.rows, concepts, text_column, str(path), with_concepts,
                                     lines=table.lines, missing_concept=missing_concept)
        return out
    if not hub or not hub.get("name"):
        raise DataError(no_source_message({"default_root": default_root, "files": files}))
    log.info("data: %s not found locally; loading '%s' from the Hugging Face hub", default_root, hub["name"])
    for split in SPLITS:
        hub_split = hub["splits"][split]
        columns, rows = _read_hub(hub["name"], hub_split)
        source = f"hub:{hub['name']}[{hub_split}]"
        out[split] = encode_rows(columns, rows, concepts, text_column, source, with_concepts,
                                 missing_concept=missing_concept)
    return out
