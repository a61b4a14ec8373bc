"""A training run's output redirected to a file (as a background run's is): progress lines with loss,
examples/s and ETA every N steps and per epoch; every Lightning line once; no advertising; no deprecation
noise; no progress-bar garbage. And what the run leaves on disk: best.ckpt without optimizer state, no
last.ckpt once finished."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
import torch
from testkit import ROOT, TINY_BERT


@pytest.fixture(scope="module")
def redirected_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("logs") / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "sparsecbm.train", "experiment=smoke", *TINY_BERT, "trainer.max_epochs=2",
                           "callbacks.progress_log.every_n_steps=2", f"hydra.run.dir={run}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout, run


def test_progress_lines_every_n_steps_and_per_epoch(redirected_run):
    out, run = redirected_run
    steps = re.findall(r"epoch (\d)/2 · step (\d+)/12 \(\d+%\) · loss (\d+\.\d+) · ([\d.]+) ex/s · "
                       r"epoch ETA \d+:\d\d:\d\d · run ETA \d+:\d\d:\d\d", out)
    assert [int(s[1]) for s in steps] == [2, 4, 6, 8, 10, 12]  # 6 steps per epoch (48 examples / 8), every 2
    assert all(float(s[3]) > 0 for s in steps)
    epochs = re.findall(r"epoch (\d)/2 done in \d+:\d\d:\d\d · train/loss [\d.]+ · val/loss [\d.]+ .*val/select [\d.]+", out)
    assert epochs == ["1", "2"]
    log_file = (run / "train.log").read_text()
    assert log_file.count("sparsecbm.progress") == len(steps) + len(epochs)  # the run's log file has them too


def test_every_library_line_once_without_noise(redirected_run):
    out, _ = redirected_run
    assert out.count("Seed set to 42") == 1
    assert out.count("`Trainer.fit` stopped: `max_epochs=2` reached.") == 1
    assert "INFO: " not in out  # Lightning's own console handler (a second copy of every line) is gone
    assert "Tip:" not in out and "litlogger" not in out and "litmodels" not in out
    assert "LeafSpec" not in out and "_pytree" not in out
    assert "it/s" not in out and "Epoch 0/" not in out and "\r" not in out  # no progress bar drawn into a file


def test_summary_names_the_model_and_explains_the_dashes(redirected_run):
    out, _ = redirected_run
    assert "train: cem (joint, concept embeddings)" in out and "joint CBM" not in out
    assert "-: not measured on val by training" in " ".join(out.split()) and "sparsecbm.evaluate" in out


def test_describe_model(cfg_factory):
    from sparsecbm.train import describe_model

    sparse = cfg_factory(["sparsity=structured"])
    assert describe_model(sparse, {"cbm": "cem", "sparsity": "structured"}) == \
        "cem (joint, concept embeddings) + structured sparsity 0.7"
    assert describe_model(cfg_factory(["cbm=standard"]), {"cbm": "standard"}) == "standard (no concepts)"
    assert describe_model(cfg_factory(["cbm=joint"]), {}) == "joint (concept logits)"
    assert describe_model(cfg_factory(["cbm=strict"]), {}) == "strict (independent, hard concepts)"


def test_disk_of_a_finished_run(redirected_run):
    out, run = redirected_run
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert [f for f in files if f.startswith("checkpoints/")] == ["checkpoints/best.ckpt"]
    assert "removed checkpoints/last.ckpt" in out
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert "optimizer_states" not in best and "lr_schedulers" not in best and "sparsecbm" in best
    weights = sum(t.numel() * t.element_size() for t in best["state_dict"].values())
    assert (run / "checkpoints" / "best.ckpt").stat().st_size < 1.2 * weights  # weights once, nothing else big
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "results.json").is_file()


def test_progress_goes_to_the_file_only_under_a_bar(monkeypatch, tmp_path):
    """On a terminal with a progress bar the lines go to the log file, not through the bar."""
    from sparsecbm.callbacks import progress

    class Trainer:
        is_global_zero = True
        progress_bar_callback = object()

    root = logging.getLogger()
    file_handler = logging.FileHandler(tmp_path / "run.log")
    console = logging.StreamHandler(stream=open(tmp_path / "console.txt", "w"))
    root.addHandler(file_handler)
    root.addHandler(console)
    level = root.level
    root.setLevel(logging.INFO)  # as in a Hydra job
    try:
        monkeypatch.setattr(progress, "interactive", lambda: True)
        progress.ProgressLog()._emit(Trainer(), "epoch 1/1 · step 1/1")
        monkeypatch.setattr(progress, "interactive", lambda: False)
        progress.ProgressLog()._emit(Trainer(), "epoch 1/1 done")
    finally:
        root.setLevel(level)
        for h in (file_handler, console):
            root.removeHandler(h)
            h.close()
    assert (tmp_path / "run.log").read_text().splitlines() == ["epoch 1/1 · step 1/1", "epoch 1/1 done"]
    assert (tmp_path / "console.txt").read_text().splitlines() == ["epoch 1/1 done"]


def test_progress_lines_rate_and_eta(caplog):
    from sparsecbm.logs import ProgressLines

    clock = iter([0.0, 5.0, 10.0, 20.0, 30.0])
    lines = ProgressLines("embedding sentences", total=400, every_s=10)
    lines._clock = lambda: next(clock)
    lines._start = lines._last = 0.0
    next(clock)  # the start
    with caplog.at_level("INFO", logger="sparsecbm.progress"):
        for _ in range(4):
            lines.advance(100)
    assert caplog.messages == ["embedding sentences: 200/400 (50%) · 20.0/s · ETA 0:00:10",
                               "embedding sentences: 300/400 (75%) · 15.0/s · ETA 0:00:07",
                               "embedding sentences: 400/400 (100%) · 13.3/s · done in 0:00:30"]


def test_annotate_embedding_logs_progress(tmp_path, caplog):
    """annotate's long step (sentence embeddings) shows in a log, not only in a terminal's bar."""
    from sparsecbm.annotate.embed import SentenceEmbedder

    emb = SentenceEmbedder("minilm", cache_dir=None, progress=False, batch_size=2)
    with caplog.at_level("INFO", logger="sparsecbm.progress"):
        emb.embed(["The pasta was tasty.", "The room was loud.", "Slow service."])
    progress = [r.getMessage() for r in caplog.records if r.name == "sparsecbm.progress"]
    assert progress[-1].startswith("embedding sentences (minilm): 3/3 (100%) · ") and "done in" in progress[-1]
