"""data/make_imbalanced.py: one class holds the asked share of every split, the minority classes keep their
relative sizes, the draw is seeded, and the source folder is never written."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from testkit import TINY_DATA

SCRIPT = Path(__file__).parents[2] / "data" / "make_imbalanced.py"
spec = importlib.util.spec_from_file_location("make_imbalanced", SCRIPT)
make_imbalanced = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_imbalanced)


def counts(folder: Path, split: str) -> Counter:
    return Counter(r["review_majority"] for r in csv.DictReader(open(folder / f"{split}.csv")))


def test_majority_share_and_minority_proportions(tmp_path):
    make_imbalanced.main(["--src", str(TINY_DATA), "--out", str(tmp_path / "a"), "--majority", "3", "--share", "0.5"])
    for split in ("train", "dev", "test"):
        before, after = counts(TINY_DATA, split), counts(tmp_path / "a", split)
        assert "no majority" not in after and after["3"] == before["3"]  # every majority row kept
        assert after["3"] / sum(after.values()) == pytest.approx(0.5, abs=0.08)  # rounding per class
        factor = (sum(after.values()) - after["3"]) / (sum(before.values()) - before["3"] - before["no majority"])
        for c in "1245":  # each minority class thinned by the one common factor (up to rounding)
            assert abs(after[c] - before[c] * factor) <= 0.5 + 1e-9
    summary = json.loads((tmp_path / "a" / "imbalance.json").read_text())
    assert summary["splits"]["train"]["counts"] == dict(sorted(counts(tmp_path / "a", "train").items()))
    # header and rows as in the source (a subset, in order)
    src = list(csv.reader(open(TINY_DATA / "train.csv")))
    out = list(csv.reader(open(tmp_path / "a" / "train.csv")))
    assert out[0] == src[0] and all(r in src[1:] for r in out[1:])


def test_seeded_and_never_writes_the_source(tmp_path):
    for name in ("a", "b"):
        make_imbalanced.main(["--src", str(TINY_DATA), "--out", str(tmp_path / name), "--majority", "3", "--share", "0.5"])
    assert (tmp_path / "a" / "train.csv").read_bytes() == (tmp_path / "b" / "train.csv").read_bytes()
    make_imbalanced.main(["--src", str(TINY_DATA), "--out", str(tmp_path / "c"), "--majority", "3", "--share", "0.5",
                          "--seed", "1"])
    assert (tmp_path / "c" / "train.csv").read_bytes() != (tmp_path / "a" / "train.csv").read_bytes()
    with pytest.raises(SystemExit, match="--out must differ from --src"):
        make_imbalanced.main(["--src", str(TINY_DATA), "--out", str(TINY_DATA)])
    with pytest.raises(SystemExit, match="already holds"):  # nothing to thin: 3 is not rare enough for 0.1
        make_imbalanced.main(["--src", str(TINY_DATA), "--out", str(tmp_path / "d"), "--majority", "3", "--share", "0.1"])
