"""wandb, offline: metrics (per concept too), config, summary, subnetwork table and figures reach the run."""

from __future__ import annotations

import json
import time

import pytest
from testkit import TINY_BERT

from sparsecbm.tracking import flat_metrics, read_offline_run
from sparsecbm.train import train


def test_wandb_offline_run_holds_the_metrics(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    (tmp_path / "wandb_home").mkdir()
    results, _ = train(cfg_factory(["experiment=smoke", *TINY_BERT, "sparsity=magnitude", "logger=wandb"]))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # offline by default: nothing left the machine
    run = read_offline_run(runs[0])
    for _ in range(60):  # wandb's service may still be writing the run file
        if run["finished"]:
            break
        time.sleep(1)
        run = read_offline_run(runs[0])
    assert run["finished"]
    history, summary, config = run["history"], run["summary"], run["config"]
    assert history["val/label/f1"] == pytest.approx(results["val"]["label"]["f1"])
    for name in ("food", "ambiance", "service", "noise"):
        assert history[f"val/concept/{name}/acc"] == pytest.approx(results["val"]["per_concept"][name]["acc"])
    assert summary["test/label/f1"] == pytest.approx(results["test"]["label"]["f1"])
    assert summary["test/per_concept/noise/f1"] == pytest.approx(results["test"]["per_concept"]["noise"]["f1"])
    assert config["seed"] == 42 and config["sparsity/schedule/final_sparsity"] == 0.7
    # the subnetwork report as a table, the heatmap as an image
    assert history["subnetworks/_type"] == "table-file" and history["subnetworks/nrows"] == 8
    table = json.loads((runs[0] / "files" / history["subnetworks/path"]).read_text())
    assert len(table["data"]) == 8 and "concept" in table["columns"]
    assert history["figures/subnetworks/format"] == "png"
    assert (runs[0] / "files" / history["figures/subnetworks/filenames"][0]).is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # the CSV logger still runs beside wandb
    assert flat_metrics({"val": {"label": {"f1": 0.5}, "n": True}}) == {"val/label/f1": 0.5}
