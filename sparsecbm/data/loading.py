"""Read train/dev/test splits (local CSV/JSONL or the Hugging Face hub) and validate them.

Everything is read as strings through ``datasets`` and checked against a
:class:`~sparsecbm.concepts.ConceptSet`. Any problem raises :class:`DataError`
naming the file, line, column and value, and what was expected.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import DataError

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
#: Delimiters suggested when a header parses as one column.
_DELIMITERS = (",", ";", "\t", "|")
#: Shell-safe names for ``data.delimiter`` (a bare ``;`` or ``|`` would need two levels of quoting).
DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}


@dataclass
class RawTable:
    """A file's rows as read: ``columns``, one dict per record (absent cells are ``None``) and the file
    line each record starts on (``None`` where a format has no lines, e.g. a JSON array)."""

    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[int | None]


def _decode(path: Path, data: bytes, encoding: str | None) -> str:
    """Bytes -> text; a UTF-8 BOM is dropped; a decode error names the line and byte."""
    import codecs

    encoding = encoding or "utf-8"
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data.encoding='{encoding}' is not a known text encoding; expected e.g. utf-8, "
                        "latin-1, cp1252 or utf-16") from None
    if codec == "utf-8":
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise DataError(f"{path}: the file starts with a UTF-16 byte order mark but is read as UTF-8; "
                            "pass data.encoding=utf-16 (or save it as UTF-8)")
        encoding = "utf-8-sig"  # the BOM Excel writes is not part of the first column's name
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}, line {line}, byte {column} of the line (offset {e.start}): byte 0x{data[e.start]:02x} "
            f"is not valid {codec} ({e.reason}); the file is in another encoding: pass data.encoding=latin-1 "
            "(or cp1252, utf-16, ...) or save the file as UTF-8"
        ) from None


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter in (None, ""):
        return "\t" if path.suffix.lower() == ".tsv" else ","
    delimiter = {"\\t": "\t", **DELIMITER_NAMES}.get(str(delimiter).lower() if len(str(delimiter)) > 2 else delimiter,
                                                     delimiter)
    if len(delimiter) != 1 or delimiter in ('"', "\n", "\r"):
        raise DataError(f"data.delimiter={delimiter!r}: expected one character or one of {list(DELIMITER_NAMES)}")
    return delimiter


def _read_csv(path: Path, text: str, delimiter: str) -> RawTable:
    """CSV/TSV with Python's csv module (strict quoting): every cell a string, line numbers kept."""
    import io

    shown = "\\t" if delimiter == "\t" else delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header, header_line, rows, lines = None, 0, [], []
    previous = 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line is not a record
            if header is None:
                header, header_line = [c.strip() for c in record], start
                continue
            if len(record) != len(header):
                what = ("more" if len(record) > len(header) else "fewer")
                fix = (f"a text holding '{shown}' must be quoted (\"...\")" if what == "more"
                       else f"an empty cell still needs its '{shown}'")
                raise DataError(
                    f"{path}, line {start}: {len(record)} fields, {what} than the {len(header)} columns of the "
                    f"header (line {header_line}); {fix}. The row begins {delimiter.join(record)[:60]!r}"
                )
            rows.append(dict(zip(header, record)))
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: not valid CSV ({e}); check the quoting "
                        "(a quote inside a quoted field is written twice: \"\")") from None
    if header is None:
        raise DataError(f"{path}: file is empty (no header row)")
    if len(header) == 1:
        counts = {d: header[0].count(d) for d in _DELIMITERS if d != delimiter}
        best = max(counts, key=counts.get)
        if counts[best]:
            name = next(k for k, v in DELIMITER_NAMES.items() if v == best)
            raise DataError(
                f"{path}, line {header_line}: the header is a single column {header[0][:70]!r} when split on "
                f"'{shown}'; the file looks {name}-separated ('{best}'): pass data.delimiter={name}"
            )
    empty = [i + 1 for i, c in enumerate(header) if not c]
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    if empty or dupes:
        raise DataError(f"{path}, line {header_line}: the header has "
                        + (f"empty column name(s) at position(s) {empty}" if empty else f"duplicate column(s) {dupes}")
                        + "; every column needs a distinct name")
    if not rows:
        raise DataError(f"{path}: split is empty (no data rows)")
    return RawTable(header, rows, lines)


def _json_record(path: Path, where: str, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"{path}, {where}: expected a JSON object {{\"column\": value, ...}}, got {type(record).__name__}")
    for key, value in record.items():
        if isinstance(value, (dict, list)):
            raise DataError(f"{path}, {where}, key '{key}': expected a string or number, got a JSON "
                            f"{'object' if isinstance(value, dict) else 'array'}")
    return record


def _read_json(path: Path, text: str) -> RawTable:
    """JSON Lines (one object per line; ``.json`` may also hold one array of objects)."""
    import json

    records, lines = [], []
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
        for i, item in enumerate(items):
            records.append(_json_record(path, f"record {i + 1}", item))
            lines.append(None)
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {number}, column {e.colno}: not valid JSON ({e.msg}); "
                                "JSON Lines holds one object per line") from None
            records.append(_json_record(path, f"line {number}", item))
            lines.append(number)
    if not records:
        raise DataError(f"{path}: split is empty (no data rows)")
    columns = list(dict.fromkeys(k for r in records for k in r))
    # an absent key stays absent (None), never a silent empty string
    return RawTable(columns, [{c: r.get(c) for c in columns} for r in records], lines)


def read_table(path: str | Path, encoding: str | None = "utf-8", delimiter: str | None = None) -> RawTable:
    """Read a CSV/TSV/JSON(L) split file, every cell as written (strings for CSV), with file line numbers.

    The standard library's parsers are used rather than ``datasets``: they report the file line of
    every record, which the error messages need.

    Raises:
        DataError: missing file, unknown type or encoding, undecodable bytes (line and byte named),
            rows whose field count differs from the header's, bad quoting or JSON, a one-column header
            that another delimiter would split (with the ``data.delimiter`` to pass).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json"):
        raise DataError(f"{path}: unsupported file type '{suffix}'; expected .csv, .tsv, .jsonl or .json")
    text = _decode(path, path.read_bytes(), encoding)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, text, _delimiter(path, delimiter))
    return _read_json(path, text)


def _read_local(path: Path, encoding: str | None = "utf-8", delimiter: str | None = None):
    """``(columns, rows)`` of a split file (see :func:`read_table`)."""
    table = read_table(path, encoding, delimiter)
    return table.columns, table.rows


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0", "false") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_unreachable_message(name: str, reason: str) -> str:
    """The one paragraph a user without network gets (names the commands that fix it)."""
    return (
        f"cannot load the data set '{name}' from the Hugging Face hub: {reason}. Without network, point the "
        "command at local files: data.root=DIR (a folder with train.csv, dev.csv and test.csv, e.g. "
        "data.root=../shared/data/cebab), or run `python data/prepare_cebab.py` once on a machine with "
        "network and copy its data/cebab folder here (see data/README.md)."
    )


def hub_reachable(timeout: float = 3.0) -> str | None:
    """``None`` when the hub answers one request within ``timeout`` seconds, else why not (no retries)."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint + "/api/datasets?limit=1", method="HEAD"),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the hub answered (an HTTP status is an answer)
    except (OSError, ValueError) as e:
        return f"{endpoint} is not reachable ({getattr(e, 'reason', e)})"
    return None


def _hub_cached(name: str) -> bool:
    """Whether a hub data set has local copies (hub or datasets cache) to read offline; no network, no import."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    ds = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")).expanduser()
    org, _, repo = name.rpartition("/")
    if (hub / f"datasets--{org}--{repo}".replace("/", "--")).is_dir():
        return True
    return ds.is_dir() and any(p.name.startswith(f"{org}___" if org else repo) for p in ds.iterdir())


def preflight(data_cfg: Mapping[str, Any]) -> None:
    """Check, before any model is loaded, that the data source a data config names can be reached.

    Follows :func:`load_splits`' source order (``root``, ``default_root``, the hub): a ``root`` that is not a
    folder, or a hub that is offline with no local copy or unreachable (one request), raises the same
    :class:`DataError` loading would, in about a second rather than after importing torch.
    """
    root, default_root, hub = data_cfg.get("root"), data_cfg.get("default_root"), data_cfg.get("hub")
    if root is not None:
        if not Path(str(root)).expanduser().is_dir():
            raise DataError(f"data.root '{root}' is not a folder; expected a folder with "
                            f"{sorted((data_cfg.get('files') or {}).values()) or 'train/dev/test files'}")
        return
    if default_root is not None and Path(str(default_root)).is_dir():
        return
    if not hub or not hub.get("name"):
        return  # load_splits names the missing source
    if _offline():
        if not _hub_cached(str(hub["name"])):
            raise DataError(hub_unreachable_message(
                str(hub["name"]), "HF_HUB_OFFLINE is set and it is not in the local cache"))
        return
    reason = hub_reachable()
    if reason is not None:
        raise DataError(hub_unreachable_message(str(hub["name"]), reason))


def _read_hub(name: str, split: str) -> tuple[list[str], list[dict[str, Any]]]:
    """One split from the hub. Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) only the local cache
    is tried; online, one request with a short timeout first, so no network fails fast, not after retries."""
    import datasets

    if not _offline():
        reason = hub_reachable()
        if reason is not None:
            raise DataError(hub_unreachable_message(name, reason))
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        reason = ("HF_HUB_OFFLINE is set and it is not in the local cache" if _offline()
                  else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise DataError(hub_unreachable_message(f"{name}[{split}]", reason)) from None
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
        raise DataError(
            "no data source: data.root is not set, "
            f"{default_root or 'no default folder'} does not exist and no hub dataset is configured"
        )
    log.info("data: %s not found locally; loading '%s' from the Hugging Face hub", default_root, hub["name"])
    for split in SPLITS:
        hub_split = hub["splits"][split]
        columns, rows = _read_hub(hub["name"], hub_split)
        source = f"hub:{hub['name']}[{hub_split}]"
        out[split] = encode_rows(columns, rows, concepts, text_column, source, with_concepts,
                                 missing_concept=missing_concept)
    return out
