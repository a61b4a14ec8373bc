"""RunResult: results.json as one object — round trip, files of earlier versions, reading by metric name,
and tables / aggregate / tracking reading it through its fields."""

from __future__ import annotations

import json

import pytest

from sparsecbm.aggregate import load_trials
from sparsecbm.run_result import RunResult
from sparsecbm.tables import bottleneck_table, load_runs, table
from sparsecbm.tracking import flat_metrics


def result(acc=0.6, seed=1, **kw) -> RunResult:
    fields = dict(
        run={"task_name": "train", "seed": seed, "epochs": 5, "train_examples_per_s": 10.0, "wall_time_s": 60.0},
        model={"mode": "joint", "activation": "logits", "label_head": "linear"},
        config={"cbm": {}, "sparsity": None},
        val={"label": {"acc": acc, "f1": acc - 0.1}},
        test={"label": {"acc": acc, "f1": acc - 0.1, "f1_papers": acc + 0.1}, "concept": {"acc": 0.8, "f1": 0.7},
              "per_concept": {"food": {"acc": 0.9, "f1": 0.85}},
              "bottleneck": {"hard": {"acc": acc - 0.2}, "ceiling": {"acc": 0.5, "f1": 0.4}},
              "intervention": {"all_ground_truth": {"acc": 0.9}}},
        data={"name": "cebab", "sizes": {"train": 10}},
        reference={"true_concept_logreg": {"test_acc": 0.511, "test_f1": 0.448},
                   "majority_class": {"test_acc": 0.27, "test_f1": 0.08}},
    )
    return RunResult(**{**fields, **kw})


def test_round_trip(tmp_path):
    r = result(subnetworks={"scorer": "magnitude"}, evaluate_config={"splits": ["test"]})
    file = r.save(tmp_path / "run")
    assert file == tmp_path / "run" / "results.json" and r.path == tmp_path / "run"
    saved = json.loads(file.read_text())
    # the file's sections, in the order train / evaluate always wrote them
    assert list(saved) == ["val", "test", "run", "model", "data", "reference", "config", "evaluate_config",
                           "subnetworks"]
    back = RunResult.load(tmp_path / "run")
    assert back == r and back.path == tmp_path / "run" and RunResult.load(file) == r
    assert back.to_dict() == saved == dict(back)  # also a read-only mapping over the same keys
    # optional sections that are empty are left out of the file
    assert list(result(test=None).to_dict()) == ["val", "run", "model", "data", "reference", "config"]


def test_an_older_results_json_still_reads(tmp_path):
    """A file from an earlier version: no data / reference / subnetworks, an unknown section, a null split."""
    old = {"val": None, "test": {"label": {"acc": 0.5, "f1": 0.4}}, "run": {"seed": 3, "epochs": 2},
           "model": {"mode": "standard", "activation": None}, "config": {"cbm": {}}, "timings": {"fit_s": 12.0}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    r = RunResult.load(tmp_path)
    assert r.test == old["test"] and r.val is None and r.data == {} and r.reference == {} and r.subnetworks is None
    assert r.extra == {"timings": {"fit_s": 12.0}}
    assert r.metric("test/label/f1") == 0.4 and r.find("test/concept/acc") is None
    with pytest.raises(KeyError, match="optimized_metric='val/label/f1' is not in this run's results"):
        r.metric("val/label/f1")
    # written back, the unknown section is kept
    r.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "results.json").read_text())["timings"] == {"fit_s": 12.0}


def test_metric_names():
    r = result()
    assert r.metric("val/label/acc") == 0.6 and r.metric("test/concept/food/f1") == 0.85
    assert r.find("test/bottleneck/ceiling/f1") == 0.4 and r.find("test/intervention/all_ground_truth/acc") == 0.9
    assert r["test"]["label"]["acc"] == 0.6 and "subnetworks" not in r  # absent optional section
    with pytest.raises(KeyError, match="no split 'dev'"):
        r.split("dev")


def test_tables_read_run_results(tmp_path):
    runs = [result(0.6, seed=1), result(0.7, seed=2)]
    for i, r in enumerate(runs):
        r.path = tmp_path / f"r{i}"
    md = table(runs)
    assert "| joint CBM (logits) | 2 | 5 | 65.0 ± 7.1 | 55.0 ± 7.1 | 80.0 ± 0.0 | 70.0 ± 0.0 | - | - | 45.0 ± 7.1 | " in md
    assert "papers' def." in md and f"Runs: {tmp_path / 'r0'}, {tmp_path / 'r1'}" in md
    bt = bottleneck_table(runs)
    assert "| cebab | joint CBM (logits) | 2 | 5 | 65.0 ± 7.1 |" in bt and "| 50.0 ± 0.0 / 40.0 ± 0.0 |" in bt
    # the same runs saved and found again on disk give the same table
    for r in runs:
        r.save(r.path)
    loaded = load_runs([str(tmp_path)])
    assert all(isinstance(r, RunResult) for r in loaded) and table(loaded) == md


def test_aggregate_and_tracking_read_run_results(tmp_path):
    for i, acc in enumerate((0.6, 0.8)):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={i}\n")
        result(acc, seed=i).save(job)
    trials = load_trials(tmp_path)
    assert [t.metrics["test/label/acc"] for t in trials] == [0.6, 0.8]
    assert "test/concept/acc" in trials[0].metrics and trials[0].metrics["val/label/f1"] == pytest.approx(0.5)
    flat = flat_metrics(result())
    assert flat["test/per_concept/food/acc"] == 0.9 and flat["run/epochs"] == 5.0 and "data/sizes/train" not in flat


def test_the_reference_reuses_the_run_s_fitted_ceiling(monkeypatch):
    """ConceptCeiling is fitted once per run: given the fitted one, the reference baselines fit nothing."""
    import numpy as np

    from sparsecbm.ceiling import ConceptCeiling
    from sparsecbm.results import reference_baselines

    rng = np.random.default_rng(0)
    concepts = rng.integers(0, 3, (60, 2))
    labels = (concepts.sum(1) > 2).astype(int)
    fresh = reference_baselines(concepts, labels, concepts, labels, [3, 3], 2)
    ceiling = ConceptCeiling.fit(concepts, labels, [3, 3], 2)

    def no_refit(*a, **k):
        raise AssertionError("fitted twice")

    monkeypatch.setattr(ConceptCeiling, "fit", no_refit)
    assert reference_baselines(concepts, labels, concepts, labels, [3, 3], 2, ceiling=ceiling) == fresh
