"""train (smoke) -> checkpoint -> intervene CLI on one text and on a split; results.json reports GT interventions."""

from __future__ import annotations

import json

import pytest
from testkit import TINY_BERT, compose_cfg

from sparsecbm.interpret.curves import InterventionCurve
from sparsecbm.interpret.intervention import InterventionError, InterventionResult
from sparsecbm.intervene import run
from sparsecbm.train import train


@pytest.fixture(scope="module")
def smoke_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    results, _ = train(compose_cfg(out, ["experiment=smoke", *TINY_BERT, "cbm.train_intervention_prob=0.5"]))
    return out, results


def test_results_json_reports_ground_truth_intervention(smoke_ckpt):
    out, results = smoke_ckpt
    saved = json.loads((out / "results.json").read_text())
    gt = saved["test"]["intervention"]
    assert gt["n_examples"] == 32 and set(gt) == {"none", "all_ground_truth", "n_examples"}
    # k=0 is the model itself: the same accuracy Lightning's test loop measured
    assert gt["none"]["acc"] == pytest.approx(saved["test"]["label"]["acc"], abs=1e-6)


def test_cli_one_text(smoke_ckpt, tmp_path):
    out, _ = smoke_ckpt
    cfg = compose_cfg(tmp_path, [f"ckpt_path={out}/checkpoints/best.ckpt", "text='The pasta was cold.'",
                                 "set={food: Positive, noise: unknown}"], "intervene")
    result = run(cfg)
    saved = InterventionResult.load(tmp_path / "intervention.json")
    assert saved == result and [e.target for e in saved.edits] == ["food", "noise"]
    assert saved.after.concepts["food"] == "Positive" and saved.after.concepts["noise"] == "unknown"
    assert json.loads((tmp_path / "intervention.json").read_text())["changed"] == result.changed()


def test_cli_split_curve(smoke_ckpt, tmp_path):
    out, results = smoke_ckpt
    cfg = compose_cfg(tmp_path, [f"ckpt_path={out}/checkpoints/best.ckpt", "split=test", "random_seeds=2"], "intervene")
    curve = run(cfg)
    saved = InterventionCurve.load(tmp_path / "intervention.json")
    assert saved == curve and (tmp_path / "intervention_curve.png").is_file()
    assert list(saved.curves) == ["random", "uncertainty", "influence", "oracle"] and saved.seeds == [0, 1]
    gt = results["test"]["intervention"]
    for pts in saved.curves.values():
        assert pts[0].acc == pytest.approx(gt["none"]["acc"]) and pts[-1].acc == pytest.approx(gt["all_ground_truth"]["acc"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["text=hi", "set={taste: Positive}"], "unknown concept 'taste'; valid concepts"),
        (["text=hi", "set={food: Great}"], "unknown value 'Great' for concept 'food'"),
        (["text=hi", "set='{food: Positive'"], "is not valid YAML"),
        (["policy=best"], "unknown intervention policy ['best']; valid policies"),
        (["set={food: Positive}"], "set=... edits one text"),
    ],
)
def test_cli_errors(smoke_ckpt, tmp_path, overrides, message):
    out, _ = smoke_ckpt
    cfg = compose_cfg(tmp_path, [f"ckpt_path={out}/checkpoints/best.ckpt", *overrides], "intervene")
    with pytest.raises(InterventionError) as e:
        run(cfg)
    assert message in str(e.value)
