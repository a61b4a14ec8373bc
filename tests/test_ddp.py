"""Data parallelism on CPU (gloo): 2 processes hold identical masks and reach one process's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testkit import ROOT

from sparsecbm.sparsity import load_masks

# movement scores come from each rank's own batches: without syncing, ranks would prune differently.
# No dropout, so one process with twice the batch computes exactly what the 2 ranks compute together.
COMMON = [
    "experiment=smoke", "cbm=joint", "backbone=tiny_bert", "sparsity=movement", "sparsity.schedule.final_sparsity=0.5",
    "sparsity.schedule.every=1", "trainer.max_epochs=2", "cbm.dropout=0", "+backbone.config.hidden_dropout_prob=0",
    "+backbone.config.attention_probs_dropout_prob=0", "callbacks.progress_bar=null",
    "+callbacks.probe._target_=ddp_probe.RankProbe",
]


def run_train(out: Path, *overrides: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "sparsecbm.train", *COMMON, *overrides, f"hydra.run.dir={out}",
           f"paths.cache_dir={out.parent / 'cache'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_two_processes_same_masks_and_metrics_as_one(tmp_path):
    run_train(tmp_path / "two", "trainer=ddp_cpu")                       # 2 ranks x batch 8
    run_train(tmp_path / "one", "trainer=cpu", "data.batch_size=16")      # 1 process x batch 16
    ranks = [load_masks(tmp_path / "two" / f"masks_rank{r}.safetensors") for r in (0, 1)]
    single = load_masks(tmp_path / "one" / "masks_rank0.safetensors")
    assert set(ranks[0]) == {"food", "ambiance", "service", "noise"}
    for concept, layers in ranks[0].items():
        for name, mask in layers.items():
            assert torch.equal(mask, ranks[1][concept][name]), (concept, name)
            assert torch.equal(mask, single[concept][name]), (concept, name)
            assert abs(1 - mask.float().mean().item() - 0.5) < 0.02
    m0, m1, m = (json.loads((tmp_path / d / f"metrics_rank{r}.json").read_text())
                 for d, r in (("two", 0), ("two", 1), ("one", 0)))
    assert m0["world_size"] == 2 and m["world_size"] == 1
    assert m0["metrics"] == m1["metrics"]  # synced: every rank reports the metric over all test examples
    assert set(m0["metrics"]) == set(m["metrics"])
    for key, value in m["metrics"].items():
        assert m0["metrics"][key] == pytest.approx(value, abs=1e-4), key
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert two["run"]["world_size"] == 2 and two["data"]["sizes"] == one["data"]["sizes"]
    assert two["val"]["label"] == pytest.approx(one["val"]["label"], abs=1e-4)
    assert not (tmp_path / "two" / "results.json.tmp").exists()
