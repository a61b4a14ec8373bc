"""Read a split file (CSV/TSV/JSON(L)) with the file line of every record, so errors name it.

Part of :mod:`sparsecbm.data.loading` (which re-exports these names).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsecbm.errors import DataError

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


#: the first bytes of compressed and archive formats (a text encoding cannot read them)
_MAGIC = {b"\x1f\x8b": ("gzip", "gunzip FILE"), b"PK\x03\x04": ("zip", "unzip FILE"),
          b"BZh": ("bzip2", "bunzip2 FILE"), b"\xfd7zXZ\x00": ("xz", "unxz FILE"),
          b"\x28\xb5\x2f\xfd": ("zstd", "unzstd FILE")}


def _compressed(path: Path, data: bytes) -> None:
    """A compressed file named like a text file: say so (its bytes are not a text in any encoding)."""
    for magic, (kind, fix) in _MAGIC.items():
        if data.startswith(magic):
            raise DataError(f"{path} is {kind}-compressed, not a text file (it starts with the {kind} signature); "
                            f"decompress it first ({fix.replace('FILE', path.name)}) and point data.root at the "
                            "decompressed files. data.encoding does not apply to compressed files")


def _utf16_without_bom(path: Path, data: bytes, codec: str) -> None:
    """Text saved as UTF-16 without a byte order mark: every other byte is 0, which UTF-8 and Latin-1 read as
    NUL characters (a 'short row' or a wrong header); name the encoding to pass instead."""
    if codec.startswith(("utf-16", "utf-32")) or b"\x00" not in data[:4096] or data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return  # (a byte order mark: _decode names it)
    sample = data[: min(len(data), 4096) // 2 * 2]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    if not half or max(even, odd) < 0.3 * half or min(even, odd) > 0.1 * half:
        return
    order, name = ("little-endian", "utf-16-le") if odd > even else ("big-endian", "utf-16-be")
    raise DataError(f"{path}: the file looks UTF-16 ({order}) without a byte order mark (every other byte is 0); "
                    f"pass data.encoding={name} (or save it as UTF-8)")


def _decode(path: Path, data: bytes, encoding: str | None) -> str:
    """Bytes -> text; a UTF-8 BOM is dropped; a decode error names the line and byte; compressed files and
    UTF-16 without a byte order mark are named as such."""
    import codecs

    encoding = encoding or "utf-8"
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data.encoding='{encoding}' is not a known text encoding; expected e.g. utf-8, "
                        "latin-1, cp1252 or utf-16") from None
    _compressed(path, data)
    _utf16_without_bom(path, data, codec)
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
    # a correctly quoted field may be as long as the file (a long review): the csv module's default limit
    # (131,072 characters) would report it as bad quoting
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
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
                _one_column_header(path, header, header_line, delimiter)  # before a row blames the quoting
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
    empty = [i + 1 for i, c in enumerate(header) if not c]
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    if empty or dupes:
        raise DataError(f"{path}, line {header_line}: the header has "
                        + (f"empty column name(s) at position(s) {empty}" if empty else f"duplicate column(s) {dupes}")
                        + "; every column needs a distinct name")
    if not rows:
        raise DataError(f"{path}: split is empty (no data rows)")
    return RawTable(header, rows, lines)


def _one_column_header(path: Path, header: list[str], line: int, delimiter: str) -> None:
    """A header that is one column when split on ``delimiter`` but holds another separator: the file uses that
    one (a TSV named .csv, a semicolon CSV from a German Excel); name the ``data.delimiter`` to pass."""
    if len(header) != 1:
        return
    shown = "\\t" if delimiter == "\t" else delimiter
    counts = {d: header[0].count(d) for d in _DELIMITERS if d != delimiter}
    best = max(counts, key=counts.get)
    if counts[best]:
        name = next(k for k, v in DELIMITER_NAMES.items() if v == best)
        raise DataError(
            f"{path}, line {line}: the header is a single column {header[0][:70]!r} when split on "
            f"'{shown}'; the file looks {name}-separated ('{best.encode('unicode_escape').decode()}'): "
            f"pass data.delimiter={name}"
        )


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
    try:
        data = path.read_bytes()
    except PermissionError:
        raise DataError(f"{path}: cannot read the file (permission denied); make it readable "
                        f"(chmod a+r {path.name}) or point data.root at a readable copy") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
    text = _decode(path, data, encoding)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, text, _delimiter(path, delimiter))
    return _read_json(path, text)


def _read_local(path: Path, encoding: str | None = "utf-8", delimiter: str | None = None):
    """``(columns, rows)`` of a split file (see :func:`read_table`)."""
    table = read_table(path, encoding, delimiter)
    return table.columns, table.rows
