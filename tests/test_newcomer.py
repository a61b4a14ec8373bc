"""A fresh clone, used as the getting-started guide says, without activating anything: ``bash run.sh <command>``
finds the environment, every command answers, the default data (data/cebab, shipped) trains offline, a checkpoint
evaluates, and ``bash run.sh test`` runs tests.

The clone is of the last commit (``git clone`` of this repository); its ``.venv/bin/python`` is a stub that runs
this interpreter, and its ``.venv/bin/pip`` fails: nothing is installed, the wrapper must use what is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import ROOT

COMMANDS = {"train": "train", "evaluate": "evaluate", "intervene": "intervene", "explain": "explain", "serve": "cli",
            "serve-bench": "bench", "annotate": "__main__", "bench": "bench", "label-refit": "label_refit", "causal": "causal",
            "tables": "usage:", "aggregate": "usage:"}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("the project folder is not a git checkout: nothing to clone")
    target = tmp_path_factory.mktemp("newcomer") / "sparsecbm"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True, timeout=120)
    bin_dir = target / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "pip").write_text("#!/bin/sh\necho 'this test forbids installing' >&2\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return target


def run_sh(clone: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", "run.sh", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wrapper_lists_and_refuses_commands(clone):
    proc = run_sh(clone, "help")
    assert proc.returncode == 0 and all(c in proc.stdout for c in [*COMMANDS, "test"])
    proc = run_sh(clone, "trian")
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr
    assert "creating .venv" not in proc.stdout + proc.stderr  # the existing environment was used


@pytest.mark.slow
def test_every_command_answers_through_the_wrapper(clone):
    failed = {}
    for command, marker in COMMANDS.items():
        proc = run_sh(clone, command, "--help")
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 or marker not in text or "Traceback" in text or "creating .venv" in text:
            failed[command] = (proc.returncode, text[-500:])
    assert not failed, failed


@pytest.mark.slow
def test_default_data_trains_offline_and_evaluates(clone, tmp_path):
    """The shipped CEBaB (data.root=null: the default folder), a tiny backbone, then evaluate its checkpoint."""
    run = tmp_path / "run"
    proc = run_sh(clone, "experiment=smoke", "backbone=tiny_bert", "data.root=null", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["data"]["sources"]["train"] == str(clone / "data" / "cebab" / "train.csv")
    proc = run_sh(clone, "evaluate", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "splits=[dev]",
                  f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["val"]["label"]["acc"] >= 0


@pytest.mark.slow
def test_run_sh_test_runs_the_suite_as_a_normal_user(clone):
    proc = run_sh(clone, "test", "tests/test_concepts.py", "-n", "0", "-p", "no:cacheprovider")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert " passed" in proc.stdout
