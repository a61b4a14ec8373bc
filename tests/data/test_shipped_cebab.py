"""The CEBaB copy shipped in data/cebab/: only the human-annotated columns, licensed, small, and what the
default config reads offline (a smoke run from it works; without it the error names the fixes)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from testkit import ROOT, TINY_BERT, compose_cfg

SHIPPED = ROOT / "data" / "cebab"
COLUMNS = ["description", "review_majority", "food_aspect_majority", "ambiance_aspect_majority",
           "service_aspect_majority", "noise_aspect_majority"]
ROWS = {"train": 1755, "dev": 1673, "test": 1685}  # CEBaB's train_exclusive / validation / test


@pytest.mark.parametrize("split", list(ROWS))
def test_shipped_files_hold_only_the_human_columns(split):
    path = SHIPPED / f"{split}.csv"
    assert path.stat().st_size < 1_000_000
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert header == COLUMNS  # never the machine-annotated concepts (cleanliness, price, ...)
    assert len(rows) == ROWS[split] and all(len(r) == len(COLUMNS) for r in rows)
    assert {r[1] for r in rows} <= {"1", "2", "3", "4", "5", "no majority"}
    assert {v for r in rows for v in r[2:]} <= {"Negative", "Positive", "unknown", "no majority", ""}


def test_licence_and_tracking():
    text = (SHIPPED / "LICENSE.md").read_text()
    assert "CC BY 4.0" in text and "creativecommons.org/licenses/by/4.0" in text and "Abraham" in text
    assert "Changes made" in text
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/cebab/train.csv"], cwd=ROOT)
    assert ignored.returncode == 1  # tracked: a fresh clone has it


def test_prepare_from_a_folder_keeps_only_the_columns(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for split in ROWS:
        with open(src / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*COLUMNS, "cleanliness", "price"])
            w.writerow(["Nice, quiet.", "4", "Positive", "unknown", "", "Positive", "Negative", "unknown"])
    proc = subprocess.run([sys.executable, str(ROOT / "data" / "prepare_cebab.py"), "--from", str(src),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "dev.csv").read_text() == ",".join(COLUMNS) + '\n"Nice, quiet.",4,Positive,unknown,,Positive\n'


def test_default_config_reads_the_shipped_folder(tmp_path):
    from hydra.utils import instantiate

    from sparsecbm.data.loading import preflight

    cfg = compose_cfg(tmp_path, [])
    assert cfg.data.root is None and cfg.data.default_root == str(SHIPPED)
    assert (cfg.cbm.mode, cfg.cbm.activation) == ("joint", "embedding")  # the default: cem
    preflight(cfg.data)  # offline (conftest sets HF_HUB_OFFLINE): the shipped folder, no hub
    dm = instantiate(cfg.data)
    dm.setup()
    assert dm.describe()["sizes"] == {"train": 1463, "dev": 1673, "test": 1685}
    assert dm.describe()["skipped"] == {"train": 292, "dev": 0, "test": 0}
    assert dm.describe()["sources"]["train"] == str(SHIPPED / "train.csv")


def test_smoke_run_from_the_shipped_data(tmp_path):
    from sparsecbm.train import train

    result, _ = train(compose_cfg(tmp_path, ["experiment=smoke", *TINY_BERT, "data.root=null"]))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["data"]["sources"]["test"] == str(SHIPPED / "test.csv")
    assert saved["data"]["sizes"] == {"train": 48, "dev": 32, "test": 32}
    assert 0.0 <= result["test"]["label"]["acc"] <= 1.0


def test_missing_shipped_folder_names_the_fixes(tmp_path):
    from sparsecbm.data.loading import preflight
    from sparsecbm.errors import DataError

    cfg = compose_cfg(tmp_path, [f"paths.data_dir={tmp_path / 'none'}"])
    with pytest.raises(DataError) as e:
        preflight(cfg.data)
    message = str(e.value)
    for part in ("data.root=DIR", "git checkout -- data/cebab", "python data/prepare_cebab.py"):
        assert part in message
    assert "shared" not in message  # no path only this project's developers have


def test_cebab_aug_without_root_asks_for_it(tmp_path):
    from sparsecbm.data.loading import preflight
    from sparsecbm.errors import DataError

    cfg = compose_cfg(tmp_path, ["data=cebab_aug"])
    with pytest.raises(DataError, match=r"no data source for data 'cebab_aug'.*pass data.root=DIR"):
        preflight(cfg.data)
