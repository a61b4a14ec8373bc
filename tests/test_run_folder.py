"""The run folder: a command that fails before it starts leaves nothing (or, for a resume, exactly what was
there); a resume keeps the interrupted run's metrics and config, also from a moved folder; a killed run exits
non-zero with the command that resumes it; outputs that cannot be written (read-only, full, under a file)
are exit code 2 and never a run that looks finished."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testkit import ROOT, TINY_BERT, TINY_DATA

from sparsecbm.errors import USER_ERROR_EXIT, OutputError

SMOKE = ["experiment=smoke", *TINY_BERT]


def run_main(argv: list[str], monkeypatch, capsys=None):
    """``python -m sparsecbm.train *argv`` in-process; returns (exit code or None, stderr)."""
    from sparsecbm.train import main

    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    code = None
    try:
        main()
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err if capsys else ""


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------------------- failing early
def test_failed_run_leaves_no_folder(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(TINY_DATA, bad)
    (bad / "dev.csv").write_text("description,review_majority\n")  # a data error, found while loading
    code, err = run_main([*SMOKE, f"data.root={bad}", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == USER_ERROR_EXIT and "dev.csv" in err
    assert not (tmp_path / "run").exists()


def test_failed_resume_changes_nothing(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, _ = run_main([*SMOKE, "keep_last_checkpoint=true", f"hydra.run.dir={run}"], monkeypatch, capsys)
    assert code is None and (run / "results.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
    before = contents(run)
    bad = tmp_path / "bad"
    shutil.copytree(TINY_DATA, bad)
    (bad / "test.csv").write_text("description,review_majority\n")
    code, err = run_main([*SMOKE, "ckpt_path=last", f"data.root={bad}", f"hydra.run.dir={run}"], monkeypatch, capsys)
    assert code == USER_ERROR_EXIT and "test.csv" in err
    assert contents(run) == before  # .hydra/config.yaml, train.log, metrics.csv, checkpoints: byte for byte


# ----------------------------------------------------------------------------------------- resume
def test_resume_from_a_moved_folder_keeps_metrics_and_config(tmp_path, monkeypatch, capsys):
    overrides = [*SMOKE, "trainer.max_epochs=3", "keep_last_checkpoint=true"]
    code, _ = run_main([*overrides, f"hydra.run.dir={tmp_path / 'full'}"], monkeypatch, capsys)
    assert code is None
    full = json.loads((tmp_path / "full" / "results.json").read_text())

    crashed = tmp_path / "crashed"
    code, _ = run_main([*overrides, "+callbacks.crash._target_=testkit.callbacks.Crash", "+callbacks.crash.epoch=2",
                        f"hydra.run.dir={crashed}"], monkeypatch, capsys)
    assert code == "simulated crash" and not (crashed / "results.json").exists()
    with open(crashed / "csv" / "metrics.csv", newline="") as f:
        rows_before = [r for r in csv.DictReader(f)]
    config_before = (crashed / ".hydra" / "config.yaml").read_text()
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(crashed, moved)

    code, _ = run_main([*overrides, "ckpt_path=last", f"hydra.run.dir={moved}"], monkeypatch, capsys)
    assert code is None
    resumed = json.loads((moved / "results.json").read_text())
    assert resumed["val"] == full["val"] and resumed["test"] == full["test"]
    assert resumed["run"]["best_checkpoint"] == str(moved / "checkpoints" / "best.ckpt")  # not the old folder

    with open(moved / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = lambda rs: sorted({int(float(r["epoch"])) for r in rs if r.get("epoch")})  # noqa: E731
    with open(tmp_path / "full" / "csv" / "metrics.csv", newline="") as f:
        full_rows = list(csv.DictReader(f))
    assert epochs(rows_before) == [0, 1, 2] and epochs(rows) == epochs(full_rows)
    old_done = [r for r in rows_before if r["epoch"] and float(r["epoch"]) < 2]
    assert [{k: v for k, v in r.items() if v} for r in rows[: len(old_done)]] == \
        [{k: v for k, v in r.items() if v} for r in old_done]  # the finished epochs' rows, unchanged
    train_rows = lambda rs: [r["step"] for r in rs if r.get("train/loss")]  # noqa: E731
    assert train_rows(rows) == train_rows(full_rows)  # the interrupted epoch is logged once, not twice

    assert (moved / ".hydra" / "config.yaml").read_text() == config_before  # the run's own config stays
    assert "ckpt_path=last" in (moved / ".hydra" / "train-1" / "overrides.yaml").read_text()
    assert not (moved / "checkpoints" / "last.ckpt").exists() or resumed["config"]["keep_last_checkpoint"]


def test_resume_of_a_finished_run_explains_the_missing_last(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert run_main([*SMOKE, f"hydra.run.dir={run}"], monkeypatch, capsys)[0] is None
    assert not (run / "checkpoints" / "last.ckpt").exists()  # a finished run keeps best.ckpt only
    code, err = run_main([*SMOKE, "ckpt_path=last", f"hydra.run.dir={run}"], monkeypatch, capsys)
    assert code == USER_ERROR_EXIT and "the run in this folder finished" in err and "keep_last_checkpoint=true" in err


# ----------------------------------------------------------------------------------------- signals
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_run_exits_nonzero_and_prints_the_resume_command(sig, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = [*SMOKE, "trainer.max_epochs=2", f"hydra.run.dir={run}", "+callbacks.kill._target_=testkit.callbacks.SignalAt",
            "+callbacks.kill.epoch=1", "+callbacks.kill.batch=2", f"+callbacks.kill.sig={int(sig)}"]
    proc = subprocess.run([sys.executable, "-m", "sparsecbm.train", *args], env={**_env(), "SPARSECBM_LAUNCHER": "bash run.sh"},
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 128 + int(sig), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (run / "results.json").exists()
    assert f"interrupted by {sig.name} after 1 finished epoch(s)" in proc.stderr
    command = proc.stderr.split("Resume with:\n", 1)[1].strip().splitlines()[0]
    assert command.startswith("bash run.sh ") and f"hydra.run.dir={run}" in command and command.endswith("ckpt_path=last")
    if sig != signal.SIGTERM:
        return
    # the printed command resumes the run (its overrides, minus the test's kill switch)
    argv = [a for a in shlex.split(command)[2:] if "callbacks.kill" not in a]
    code, _ = run_main(argv, monkeypatch, capsys)
    assert code is None and (run / "results.json").is_file()


@pytest.mark.slow
def test_killed_before_the_first_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = [*SMOKE, f"hydra.run.dir={run}", "+callbacks.kill._target_=testkit.callbacks.SignalAt", "+callbacks.kill.epoch=0",
            "+callbacks.kill.batch=1"]
    proc = subprocess.run([sys.executable, "-m", "sparsecbm.train", *args], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 143 and "before the first epoch ended: there is no checkpoint to resume from" in proc.stderr


# ----------------------------------------------------------------------------------------- outputs
@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` (root only); skips the test, saying why, where mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nobody can write: chmod for a normal user, a read-only tmpfs for root (who ignores modes)."""
    if os.geteuid() != 0:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    else:
        with tmpfs(path, "ro,size=1m") as p:
            yield p


@pytest.mark.parametrize("where", ["inside", "itself"])
def test_training_into_a_read_only_folder(where, tmp_path, monkeypatch, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        target = ro / "run" if where == "inside" else ro
        code, err = run_main([*SMOKE, f"hydra.run.dir={target}"], monkeypatch, capsys)
        assert code == USER_ERROR_EXIT, err
        assert "Traceback" not in err and ("read-only" in err or "permission denied" in err) and str(ro) in err
        assert not list(ro.iterdir())


def test_training_under_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run_main([*SMOKE, f"hydra.run.dir={tmp_path / 'file' / 'run'}"], monkeypatch, capsys)
    assert code == USER_ERROR_EXIT and "Traceback" not in err and "is a file, not a folder" in err, err


def test_training_on_a_full_disk(tmp_path, monkeypatch, capsys):
    """A 1 MB file system: the checkpoints cannot fit; refused before the first epoch, nothing left behind."""
    with tmpfs(tmp_path / "tiny", "size=1m") as tiny:
        code, err = run_main([*SMOKE, f"hydra.run.dir={tiny / 'run'}"], monkeypatch, capsys)
        assert code == USER_ERROR_EXIT and "Traceback" not in err, err
        assert "free, but training (best.ckpt and last.ckpt, written atomically) needs about" in err
        assert not (tiny / "run").exists()


def test_a_write_that_runs_out_of_space_leaves_no_partial_file(tmp_path):
    from sparsecbm.jsonio import write_json

    with tmpfs(tmp_path / "tiny", "size=64k") as tiny:
        (tiny / "filler").write_bytes(b"\0" * 60_000)
        write_json(tiny / "results.json", {"ok": 1})  # fits
        with pytest.raises(OutputError, match=r"cannot write .*results.json: no space left on the device"):
            write_json(tiny / "results.json", {"x": "y" * 100_000})
        assert json.loads((tiny / "results.json").read_text()) == {"ok": 1}  # the old content stays
        assert not list(tiny.glob("*.tmp"))


def test_checkpoint_write_failure_is_an_output_error(tmp_path):
    from sparsecbm.callbacks import AtomicCheckpointIO

    with tmpfs(tmp_path / "tiny", "size=64k") as tiny:
        with pytest.raises(OutputError, match=r"cannot write .*last.ckpt"):
            AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000)}, tiny / "last.ckpt")
        assert not list(tiny.iterdir())
