"""Faults survived: a sparse run killed with SIGKILL mid-epoch resumes to the uninterrupted run's masks and
metrics (bit for bit on CPU); a process killed while writing a checkpoint leaves the previous one loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testkit import ROOT, TINY_BERT

from sparsecbm.checkpoint import load_model, read_checkpoint
from sparsecbm.errors import CheckpointError
from sparsecbm.sparsity import load_masks
from sparsecbm.train import train

SPARSE = ["experiment=smoke", *TINY_BERT, "trainer.max_epochs=3", "keep_last_checkpoint=true", "sparsity=movement",
          "sparsity.schedule.final_sparsity=0.5", "sparsity.schedule.every=2", "sparsity.schedule.end=0.7"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(cfg_factory, tmp_path):
    full, _ = train(cfg_factory(SPARSE, out=tmp_path / "full"))
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", "import torch; torch.set_num_threads(1); from sparsecbm.train import main; main()",
         *SPARSE, f"hydra.run.dir={killed}", f"paths.cache_dir={tmp_path / 'cache'}", "callbacks.progress_bar=null",
         "+callbacks.kill._target_=testkit.callbacks.KillAt", "+callbacks.kill.epoch=1", "+callbacks.kill.batch=3"],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / "results.json").exists()
    last = read_checkpoint(killed / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (0, 6)  # the end of epoch 0: epoch 1 died at its 4th batch

    resumed, _ = train(cfg_factory([*SPARSE, "ckpt_path=last"], out=killed))
    assert resumed["run"]["resumed_from"].endswith("last.ckpt")
    assert resumed["val"] == full["val"] and resumed["test"] == full["test"]
    assert resumed["subnetworks"]["concepts"] == full["subnetworks"]["concepts"]
    mf, mr = load_masks(tmp_path / "full" / "masks.safetensors"), load_masks(killed / "masks.safetensors")
    assert mf.keys() == mr.keys() and all(torch.equal(mf[c][n], mr[c][n]) for c in mf for n in mf[c])
    assert 0.45 < resumed["subnetworks"]["concepts"]["food"]["sparsity"] < 0.55  # pruning really happened
    sf = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    sr = read_checkpoint(killed / "checkpoints" / "last.ckpt")["state_dict"]
    assert sf.keys() == sr.keys() and all(torch.equal(sf[k], sr[k]) for k in sf)


def test_killed_while_writing_a_checkpoint_leaves_the_previous_one(cfg_factory, tmp_path):
    train(cfg_factory(["experiment=smoke", *TINY_BERT, "test=false", "keep_last_checkpoint=true"], out=tmp_path))
    target = tmp_path / "checkpoints" / "last.ckpt"
    before = target.read_bytes()
    script = f"""
import os, signal, torch
from sparsecbm.callbacks import AtomicCheckpointIO
real_save = torch.save
def dying_save(obj, f, *a, **k):
    real_save(obj, f, *a, **k)
    f.flush()
    f.truncate(f.tell() // 2)            # half of the new checkpoint is on disk ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... when the process dies
torch.save = dying_save
ckpt = torch.load({str(target)!r}, map_location="cpu", weights_only=False)
ckpt["epoch"] = 99
AtomicCheckpointIO().save_checkpoint(ckpt, {str(target)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert target.read_bytes() == before  # untouched: the write went to last.ckpt.tmp
    assert load_model(target)[1].concepts.names == ["food", "ambiance", "service", "noise"]
    partial = Path(str(target) + ".tmp")
    assert partial.is_file() and 0 < partial.stat().st_size < len(before)
    try:
        read_checkpoint(partial)
    except CheckpointError as e:
        assert "is truncated" in str(e) and "killed while writing it" in str(e)
    else:
        raise AssertionError("a half-written checkpoint was read")
