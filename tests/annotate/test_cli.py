"""``python -m sparsecbm.annotate`` as documented, on the tiny CEBaB fixture with real MiniLM: the written
folder trains with ``data=annotated`` (its empty human cells read as ``unknown``), and ``discover=true``
writes a bank that loads."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest
from testkit import TINY_DATA

from sparsecbm.annotate import load_bank
from sparsecbm.data.schema import annotated_datamodule, read_schema


@pytest.mark.slow
def test_annotate_then_discover_on_the_tiny_fixture(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(TINY_DATA, data)
    with open(data / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index("food_aspect_majority")] = ""  # CEBaB leaves some concept cells empty
    with open(data / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "ann"
    r = subprocess.run([sys.executable, "-m", "sparsecbm.annotate", f"data.root={data}", "bank=cebab",
                        f"out_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'h'}",
                        "discover=true", "discovery.clusters=6", "discovery.candidates=3", "discovery.max_concepts=4"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    schema = read_schema(out)
    assert schema.sources["food"] == "human" and schema.sources["price"] == "machine"
    dm = annotated_datamodule(str(out), tokenizer="minilm")
    dm.setup()
    food = dm.concept_set.position("food")
    assert dm.raw["train"].concepts[0][food] == dm.concept_set["food"].values.index("unknown")
    ranking = list(csv.DictReader(open(out / "discovery" / "ranking.csv")))
    assert [int(x["step"]) for x in ranking] == [1, 2, 3, 4]
    assert len(load_bank(out / "discovery" / "bank.yaml")) >= len(load_bank("cebab"))
