"""Running an entry point as a user would (exit status 2, no traceback) and fake run folders for the table tools."""

from __future__ import annotations

import json
import sys

import pytest

from sparsecbm.errors import USER_ERROR_EXIT


def call(main, argv: list[str], monkeypatch, capsys) -> str:
    """Run ``main`` as ``prog *argv``; assert exit status 2 and no traceback; return stderr."""
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == USER_ERROR_EXIT, err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


def fake_run(folder, mode, seed, acc, sub=None, epochs=5, cbm=None, sparsity=None, activation="logits",
             bottleneck=None):
    folder.mkdir(parents=True)
    r = {"run": {"epochs": epochs, "train_examples_per_s": 10.0, "wall_time_s": 120.0, "seed": seed},
         "model": {"mode": mode, "activation": activation}, "config": {"cbm": cbm or {}, "sparsity": sparsity},
         "test": {"label": {"acc": acc, "f1": acc - 0.1}, "concept": {"acc": 0.8, "f1": 0.7}},
         "reference": {"true_concept_logreg": {"test_acc": 0.511, "test_f1": 0.448},
                       "majority_class": {"test_acc": 0.27, "test_f1": 0.08}}}
    if sub:
        r["subnetworks"] = sub
    if bottleneck:
        r["test"]["bottleneck"] = bottleneck
        r["test"]["intervention"] = {"all_ground_truth": bottleneck["all_ground_truth"]}
    (folder / "results.json").write_text(json.dumps(r))
