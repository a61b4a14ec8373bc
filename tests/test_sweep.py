"""Hydra multiruns: an Optuna search on the smoke config, a grid sweep and its mean ± std table."""

from __future__ import annotations

import csv
import importlib.util
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit import ROOT

from sparsecbm.aggregate import aggregate_table, load_trials, summarize
from sparsecbm.errors import DataError

FAST = ["backbone=tiny_bert", "callbacks.progress_bar=null"]


def multirun(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "sparsecbm.train", "-m", *FAST, *overrides, f"hydra.sweep.dir={out}",
           f"paths.cache_dir={out.parent / 'cache'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="hydra-optuna-sweeper is not installed (pip install -e .[sweep])")
def test_optuna_sweep_on_smoke(tmp_path):
    out = tmp_path / "sweep"
    multirun(out, "hparams_search=smoke_optuna")
    best = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "cbm.concept_loss_weight",
                                        "sparsity.schedule.final_sparsity", "sparsity/scorer"}
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    values = [float(r["val/label/f1"]) for r in rows]
    # the value each trial returned to Optuna is its val task macro-F1, and the best is the maximum
    assert best["best_value"] == pytest.approx(max(values))
    assert {r["sparsity/scorer"] for r in rows} <= {"magnitude", "movement", "obert"}
    assert "Best: job" in (out / "summary.md").read_text()


def test_grid_multirun_and_aggregation(tmp_path):
    out = tmp_path / "grid"
    multirun(out, "experiment=smoke", "sparsity=magnitude", "sparsity.schedule.final_sparsity=0.5,0.7", "seed=1,2")
    trials = load_trials(out)
    assert [t.job for t in trials] == ["0", "1", "2", "3"] and all(t.ok for t in trials)
    md = (out / "summary.md").read_text()  # written by the SweepSummary Hydra callback
    assert "| sparsity.schedule.final_sparsity | runs | val/label/f1 |" in md
    for level in ("0.5", "0.7"):
        f1 = [t.metrics["test/label/f1"] for t in trials if t.params["sparsity.schedule.final_sparsity"] == level]
        cell = f"{100 * statistics.mean(f1):.1f} ± {100 * statistics.stdev(f1):.1f}"
        row = next(line for line in md.splitlines() if line.startswith(f"| {level} | 2 |"))
        assert row.split(" | ")[5] == cell  # columns: level, runs, val f1, val acc, test acc, test f1
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["seed"] for r in rows] == ["1", "2", "1", "2"]
    # the CLI gives the same table; a folder without jobs is an error
    assert aggregate_table(trials) in summarize(out)
    with pytest.raises(DataError, match="no Hydra job folders"):
        summarize(tmp_path / "cache")
