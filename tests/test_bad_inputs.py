"""Bad inputs beyond tests/test_errors.py's table: files that cannot be read, huge quoted fields, a file in
another encoding that loads once named, a single-class training split, tables on odd results."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
from testkit import TINY_DATA

from sparsecbm.data.files import read_table
from sparsecbm.errors import USER_ERROR_EXIT, DataError

HEADER = ["description", "review_majority", "food_aspect_majority", "ambiance_aspect_majority",
          "service_aspect_majority", "noise_aspect_majority"]


def test_unreadable_file_is_a_data_error(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    path.write_text(",".join(HEADER) + "\nok,4,Positive,unknown,unknown,Negative\n")
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads any file whatever its mode: make the read fail as it does for a normal user
        def refuse(self):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(DataError, match=r"train.csv: cannot read the file \(permission denied\); make it readable"):
        read_table(path)


def test_a_quoted_one_megabyte_review_is_read(tmp_path):
    review = ("The tasting menu, course by course: " + "delicious, " * 100_000)[:1_000_000]
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerow([review, "5", "Positive", "unknown", "unknown", "unknown"])
        w.writerow(["Short.", "2", "Negative", "unknown", "unknown", "unknown"])
    table = read_table(path)
    assert len(table.rows[0]["description"]) == 1_000_000 and table.rows[1]["review_majority"] == "2"
    assert table.lines == [2, 3]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_loads_once_named(encoding, tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes((",".join(HEADER) + "\nCrème brûlée,5,Positive,unknown,unknown,unknown\n").encode(encoding))
    order = "little" if encoding.endswith("le") else "big"
    with pytest.raises(DataError, match=f"looks UTF-16 \\({order}-endian\\) without a byte order mark.*data.encoding={encoding}"):
        read_table(path)
    assert read_table(path, encoding=encoding).rows[0]["description"] == "Crème brûlée"


def test_tsv_named_csv_loads_with_the_named_delimiter(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("\t".join(HEADER) + "\nGood, cheap\t4\tPositive\tunknown\tunknown\tNegative\n")
    with pytest.raises(DataError, match=r"looks tab-separated \('\\t'\): pass data.delimiter=tab"):
        read_table(path)
    assert read_table(path, delimiter="tab").rows[0]["description"] == "Good, cheap"


def test_single_class_training_split_warns(tmp_path, cfg_factory, caplog):
    from hydra.utils import instantiate

    folder = tmp_path / "d"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            w.writerow(["Fine.", "4", "Positive", "unknown", "unknown", "unknown"])
            w.writerow(["Also fine.", "4" if split == "train" else "2", "Negative", "unknown", "unknown", "unknown"])
    dm = instantiate(cfg_factory([f"data.root={folder}", "data.max_length=32"]).data)
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "every one of the 2 training rows has label '4': the model can only learn to predict that class" in caplog.text
    assert "concept 'ambiance' has the single value 'unknown' in all 2 training rows" in caplog.text


def test_tables_on_odd_results(tmp_path, monkeypatch, capsys):
    from sparsecbm import tables

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text("null")
    for argv, message in ((["runs=" + str(tmp_path)], "results.json: not a results.json of sparsecbm (it holds null"),
                          ([f"runs={TINY_DATA}", f"out={tmp_path}"], "is a folder; expected a file path to write"),
                          ([f"runs={TINY_DATA}", "data.root=/x"], "Could not override 'data.root'")):
        monkeypatch.setattr(sys, "argv", ["prog", *argv])
        with pytest.raises(SystemExit) as e:
            tables.main()
        err = capsys.readouterr().err
        assert e.value.code == USER_ERROR_EXIT and message in err and "Traceback" not in err, err


def test_tables_old_flags_still_work_with_a_warning(tmp_path, monkeypatch, capsys):
    from sparsecbm import tables
    from sparsecbm.keyvalue import legacy_argv

    with pytest.warns(FutureWarning, match="use key=value like every other command"):
        assert legacy_argv(["a b", "c", "--out", "t.md", "--kind=bottleneck"], "runs",
                           {"--out": "out", "--kind": "kind"}, many=True) == ["out='t.md'", "kind='bottleneck'", "runs=['a b','c']"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"run": {}, "config": {}, "test": {}}))
    monkeypatch.setattr(sys, "argv", ["prog", str(tmp_path / "none"), "--out", str(tmp_path / "t.md")])
    with pytest.warns(FutureWarning), pytest.raises(SystemExit) as e:
        tables.main()
    assert e.value.code == USER_ERROR_EXIT and "none: no such file or folder" in capsys.readouterr().err
