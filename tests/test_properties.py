"""Property-based tests (hypothesis): generated CSV / JSONL files with random bad cells, encodings and shapes,
and random ``set=`` requests, never raise anything but the project's own error, and never coerce silently:
whenever a file or request is accepted, the result is exactly what an independent reading of it says.

The reading functions are tested directly (no training), so 500+ cases take a few seconds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sparsecbm.concepts import ConceptSet
from sparsecbm.data.loading import encode_rows, read_table
from sparsecbm.errors import DataError, InterventionError
from sparsecbm.interpret.intervention import parse_set

VALUES = ["Negative", "Positive", "unknown"]
CS = ConceptSet.from_config(
    [{"name": "food", "column": "food"}, {"name": "noise", "column": "noise"}],
    {"column": "label", "values": ["1", "2", "3"], "skip": ["no majority"]},
    VALUES,
    {"no majority": "unknown"},
)
COLUMNS = ["text", "label", "food", "noise"]
# non-ASCII letters whose Latin-1 bytes are never valid UTF-8, so a wrong data.encoding always shows
RAW_TEXT = st.text(alphabet=st.sampled_from(list("ab ,;\"'\n\r\t.x") + ["é", "ü", "ñ", "€"]), max_size=12)
TEXT = st.one_of(RAW_TEXT, st.tuples(st.sampled_from(["Good", "Bad", "Okay"]), RAW_TEXT).map("".join))
# valid cells drawn as often as bad ones, so that both outcomes are common
GOOD_LABEL, GOOD_CONCEPT = st.sampled_from(["1", "2", "3"]), st.sampled_from(["Negative", "Positive", "unknown"])
LABEL = st.one_of(GOOD_LABEL, GOOD_LABEL, GOOD_LABEL, st.sampled_from([" 2 ", "no majority", "9", "", "1.0", "two"]))
CONCEPT = st.one_of(GOOD_CONCEPT, GOOD_CONCEPT, GOOD_CONCEPT,
                    st.sampled_from([" Positive ", "no majority", "", "Tasty", "negative"]))
TMP = Path(tempfile.mkdtemp(prefix="sparsecbm-hypothesis-"))
FAST = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expected(rows: list[dict], missing_concept: str):
    """The independent reading: (texts, labels, concepts, skipped) or None when the rows must be refused."""
    texts, labels, concepts, skipped = [], [], [], 0
    for row in rows:
        label = row.get("label")
        if label is None:
            return None
        label = (str(int(label)) if isinstance(label, float) and label.is_integer() else str(label)).strip()
        if label == "no majority":
            skipped += 1
            continue
        if label not in ("1", "2", "3"):
            return None
        text = "" if row.get("text") is None else str(row["text"]).strip()
        if not text:
            return None
        values = []
        for name in ("food", "noise"):
            raw = row.get(name)
            raw = "" if raw is None else str(raw).strip()
            if raw == "":
                if missing_concept != "unknown":
                    return None
                raw = "unknown"
            raw = "unknown" if raw == "no majority" else raw
            if raw not in VALUES:
                return None
            values.append(VALUES.index(raw))
        texts.append(text)
        labels.append(["1", "2", "3"].index(label))
        concepts.append(values)
    if not texts:
        return None
    return texts, labels, concepts, skipped


def read(path: Path, encoding: str, delimiter, missing_concept: str):
    table = read_table(path, encoding, delimiter)
    enc = encode_rows(table.columns, table.rows, CS, "text", str(path), lines=table.lines,
                      missing_concept=missing_concept)
    return enc.texts, enc.labels, enc.concepts, enc.skipped


ROWS = st.lists(st.fixed_dictionaries({"text": TEXT, "label": LABEL, "food": CONCEPT, "noise": CONCEPT}),
                min_size=0, max_size=3)


@FAST
@given(rows=ROWS, write_enc=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]),
       read_enc=st.sampled_from(["same", "same", "utf-8", "latin-1", "utf-16"]),
       delims=st.sampled_from([(",", None), (",", None), (";", "semicolon"), ("\t", "tab"), (",", ","),
                               (";", None), ("\t", None), (",", "semicolon")]),
       missing=st.sampled_from(["error", "unknown"]),
       reshape=st.sampled_from([None, None, None, "extra", "short"]), where=st.integers(0, 5))
def test_generated_csv_files(rows, write_enc, read_enc, delims, missing, reshape, where):
    file_delim, read_delim = delims
    if read_enc == "same":
        read_enc = write_enc.replace("-sig", "")
    if write_enc == "latin-1":
        rows = [{k: v.replace("€", "e") for k, v in r.items()} for r in rows]  # not in Latin-1
    if read_enc == "latin-1" and write_enc != "latin-1":
        read_enc = write_enc.replace("-sig", "")  # UTF-8 bytes read as Latin-1 are always "valid": a choice only the user can make
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=file_delim, lineterminator="\r\n")  # quotes fields holding \r or \n
    w.writerow(COLUMNS)
    records = [[r[c] for c in COLUMNS] for r in rows]
    if reshape and records:
        i = where % len(records)
        records[i] = records[i] + ["surplus"] if reshape == "extra" else records[i][:-1]
    w.writerows(records)
    path = TMP / "train.csv"
    path.write_bytes(buf.getvalue().encode(write_enc))

    effective = {None: ",", ",": ",", "semicolon": ";", "tab": "\t"}[read_delim]
    same_codec = write_enc.replace("-sig", "") == read_enc
    non_ascii = any(ord(ch) > 127 for r in rows for v in r.values() for ch in v)
    decodable = same_codec or (write_enc == "latin-1" and read_enc == "utf-8" and not non_ascii)
    ok = decodable and effective == file_delim and not (reshape and records)
    want = expected(rows, missing) if ok else None
    try:
        got = read(path, read_enc, read_delim, missing)
    except DataError as e:
        assert want is None, f"refused a valid file: {e}"
        event("refused")
        assert str(path) in str(e) or "data." in str(e)
        return
    assert want is not None, f"accepted a bad file: {got}"
    assert got == want
    event("accepted")


JSON_ROW = st.fixed_dictionaries({"text": TEXT, "label": st.one_of(LABEL, st.integers(0, 4), st.sampled_from([2.0, 2.5])),
                                  "food": CONCEPT, "noise": st.one_of(CONCEPT, st.none())})


@FAST
@given(rows=st.lists(JSON_ROW, min_size=1, max_size=3), drop=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(COLUMNS)), max_size=1),
       nest=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(COLUMNS)), max_size=1), ascii_only=st.booleans(),
       missing=st.sampled_from(["error", "unknown"]), garbage=st.sampled_from([None, None, "{", "[1]", "null", "  "]))
def test_generated_jsonl_files(rows, drop, nest, ascii_only, missing, garbage):
    rows = [dict(r) for r in rows]
    for i, key in drop:  # an absent key
        if rows:
            rows[i % len(rows)].pop(key, None)
    nested = False
    for i, key in nest:  # a JSON array where a string belongs
        if rows:
            rows[i % len(rows)][key] = [1, 2]
            nested = True
    lines = [json.dumps(r, ensure_ascii=ascii_only) for r in rows]
    if garbage is not None:
        lines.insert(len(lines) // 2, garbage)
    path = TMP / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad_line = garbage not in (None, "  ")
    # a key no record has is a wrong column name (an error), not missing cells
    absent = any(all(c not in r for r in rows) for c in COLUMNS)
    want = None if nested or bad_line or absent else expected(rows, missing)
    try:
        got = read(path, "utf-8", None, missing)
    except DataError as e:
        assert want is None, f"refused a valid file: {e}"
        event("refused")
        return
    assert want is not None, f"accepted a bad file: {got}"
    assert got == want
    event("accepted")


# ------------------------------------------------------------------------------------------ set=
SET_CS = ConceptSet.from_config([{"name": "food"}, {"name": "noise"}], {"column": "y", "values": ["a", "b"]}, VALUES,
                                {"no majority": "unknown"})
NUMBER = st.one_of(st.floats(-1, 2), st.sampled_from([math.nan, math.inf, -math.inf]), st.sampled_from([0, 1, 0.5, 0.25, 1.0]),
                   st.booleans(), st.text(max_size=3))
VALUE = st.one_of(
    st.sampled_from(VALUES + ["no majority"]),
    st.sampled_from([[1, 0, 0], [0.2, 0.3, 0.5], {"Positive": 1}, {"Negative": 0.5, "unknown": 0.5}]),
    st.sampled_from(["Great", "", "positive"]),
    st.none(), st.integers(-1, 3), st.booleans(),
    st.lists(NUMBER, max_size=4),
    st.sampled_from([[1, 0, 0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]]),
    st.dictionaries(st.sampled_from(VALUES + ["Great"]), NUMBER, max_size=3),
)


def expected_probs(value):
    """The distribution a valid entry writes, or None when it must be refused."""
    if isinstance(value, dict):
        if any(k not in VALUES for k in value):
            return None
        value = [value.get(v, 0.0) for v in VALUES]
    if isinstance(value, list):
        if len(value) != 3 or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in value):
            return None
        if not all(math.isfinite(p) for p in value) or min(value) < 0 or abs(sum(value) - 1) > 1e-3:
            return None
        return [p / sum(value) for p in value]
    key = "" if value is None else str(value).strip()
    key = "unknown" if key == "no majority" else key
    return [float(v == key) for v in VALUES] if key in VALUES else None


@FAST
@given(spec=st.dictionaries(st.sampled_from(["food", "noise", "food", "noise", "taste", "Food"]), VALUE, max_size=2))
def test_generated_set_requests(spec):
    want = {n: expected_probs(v) for n, v in spec.items()}
    valid = all(n in ("food", "noise") for n in spec) and all(p is not None for p in want.values())
    try:
        edits = parse_set(spec, SET_CS)
    except InterventionError:
        assert not valid, f"refused a valid request {spec}"
        event("refused")
        return
    event("accepted")
    assert valid, f"accepted {spec} as {edits}"
    assert [e.target for e in edits] == list(spec)
    for e in edits:
        assert len(e.probs) == 3 and min(e.probs) >= 0 and abs(sum(e.probs) - 1) < 1e-6
        assert e.probs == want[e.target] or all(abs(a - b) < 1e-9 for a, b in zip(e.probs, want[e.target]))


@FAST
@given(text=st.lists(st.sampled_from(list("{}[]:,'\" -.0123456789") + ["food", "noise", "Positive", "x", "\n"]),
                    max_size=20).map("".join))
def test_generated_set_strings(text):
    """Any string (what ``set='...'`` passes): the project's error or well-formed edits, never another exception."""
    try:
        edits = parse_set(text, SET_CS)
    except InterventionError as e:
        assert "set=" in str(e) or "'food'" in str(e) or "'noise'" in str(e) or "concept" in str(e)
        return
    for e in edits:
        assert e.target in ("food", "noise") and len(e.probs) == 3 and abs(sum(e.probs) - 1) < 1e-6


# ------------------------------------------------------------------ encodings, compression, delimiters, huge fields
COMPRESSORS = {
    "gzip": lambda b: __import__("gzip").compress(b),
    "bzip2": lambda b: __import__("bz2").compress(b),
    "xz": lambda b: __import__("lzma").compress(b),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({"text": TEXT, "label": st.one_of(GOOD_LABEL, LABEL), "food": GOOD_CONCEPT,
                                            "noise": st.one_of(GOOD_CONCEPT, CONCEPT)}), min_size=0, max_size=3),
       write_enc=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "utf-16-le", "utf-16-be"]),
       read_enc=st.sampled_from(["same"] * 6 + ["utf-8", "utf-16-le"]),
       delims=st.sampled_from([(",", None)] * 3 + [("\t", "tab"), ("|", "pipe"), ("\t", None), (";", None)]),
       compress=st.sampled_from([None] * 8 + ["gzip", "bzip2", "xz"]),
       huge=st.sampled_from([0, 0, 0, 140_000]))
def test_generated_files_across_encodings_compression_delimiters_and_huge_fields(rows, write_enc, read_enc, delims,
                                                                               compress, huge):
    """Every file is either read exactly as an independent reading says, or refused with the project's error
    naming what it is: a compressed file as compressed, UTF-16 without a byte order mark as such, another
    delimiter by name; a quoted field longer than the csv module's default limit is read, not blamed on quoting."""
    file_delim, read_delim = delims
    if huge and rows:
        rows = [dict(rows[0], text="Long, " + "x" * huge), *rows[1:]]
    if write_enc == "latin-1":
        rows = [{k: v.replace("€", "e") for k, v in r.items()} for r in rows]
    if read_enc == "same":
        read_enc = write_enc.replace("-sig", "")
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=file_delim, lineterminator="\r\n")
    w.writerow(COLUMNS)
    w.writerows([[r[c] for c in COLUMNS] for r in rows])
    data = buf.getvalue().encode(write_enc)
    if compress:
        data = COMPRESSORS[compress](data)
    path = TMP / "train.csv"
    path.write_bytes(data)

    effective = {None: ",", "tab": "\t", "pipe": "|"}[read_delim]
    codec = {"utf-16": "utf-16"}.get(write_enc, write_enc.replace("-sig", ""))
    non_ascii = any(ord(ch) > 127 for r in rows for v in r.values() for ch in v)
    decodable = codec == read_enc or (codec in ("utf-8", "latin-1") and read_enc == "utf-8" and not non_ascii)
    want = expected(rows, "error") if (not compress and decodable and effective == file_delim) else None
    try:
        got = read(path, read_enc, read_delim, "error")
    except DataError as e:
        message = str(e)
        assert want is None, f"refused a valid file: {message}"
        if compress:
            assert f"is {compress}-compressed" in message
        elif write_enc in ("utf-16-le", "utf-16-be") and read_enc == "utf-8":
            assert "without a byte order mark" in message and f"data.encoding={write_enc}" in message
        elif write_enc == "utf-16" and read_enc == "utf-8":
            assert "UTF-16 byte order mark" in message
        elif decodable and effective != file_delim and file_delim in ("\t", "|", ";"):
            assert "data.delimiter=" in message or "fields" in message or "missing column" in message
        assert "field larger than field limit" not in message
        event("refused")
        return
    assert want is not None, f"accepted a bad file: {got}"
    assert got == want
    event("accepted" + (" huge" if huge and rows else ""))
