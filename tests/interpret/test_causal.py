"""train (smoke, tiny BERT) on the tiny counterfactual fixture -> ``python -m sparsecbm.causal``; the ``icace``
block of results.json; a concept proxy of a black box; mask-level edits; user errors (exit 2); the explorer's
one-text view."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from testkit import FIXTURES, TINY_BERT, compose_cfg

from sparsecbm.causal import main, run
from sparsecbm.errors import USER_ERROR_EXIT
from sparsecbm.interpret.causal_model import CausalModel, counterfactual_effect
from sparsecbm.interpret.icace import ICaCEReport
from sparsecbm.train import train

CF_DATA = FIXTURES / "cebab_tiny_cf"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Smoke runs on the counterfactual fixture: the default cem, a black box (standard) and its proxy."""
    out = {}
    for name, extra in {"cem": [], "standard": ["cbm=standard"], "no_pairs": ["data.counterfactuals=null"]}.items():
        folder = tmp_path_factory.mktemp(name)
        out[name] = (folder, train(compose_cfg(folder, ["experiment=smoke", *TINY_BERT, f"data.root={CF_DATA}",
                                                        *extra]))[0])
    folder = tmp_path_factory.mktemp("proxy")
    teacher = out["standard"][0] / "checkpoints" / "best.ckpt"
    out["proxy"] = (folder, train(compose_cfg(folder, ["experiment=smoke", *TINY_BERT, f"data.root={CF_DATA}",
                                                       f"cbm.teacher={teacher}"]))[0])
    return out


def ckpt(runs, name):
    return runs[name][0] / "checkpoints" / "best.ckpt"


def test_results_json_icace_block(runs):
    block = runs["cem"][1]["test"]["icace"]
    assert block["source"] == "reconstructed" and block["n_pairs"] == sum(block["pairs_per_concept"].values()) > 0
    assert list(block["explainers"]) == ["hard", "soft", "conexp", "approx", "approx_matched"]
    hard = block["explainers"]["hard"]
    assert set(hard["per_concept"]) == set(block["pairs_per_concept"]) and hard["n"] == block["n_pairs"]
    assert {c: m["n"] for c, m in hard["per_concept"].items()} == block["pairs_per_concept"]
    assert 0 <= hard["cosine"] <= 2 and hard["l2"] >= 0
    # a black box: only the explainers that do not intervene on its own concepts
    assert list(runs["standard"][1]["test"]["icace"]["explainers"]) == ["conexp", "approx", "approx_matched"]
    # no pairs in the data (data.counterfactuals=null): no block; never on the validation split
    assert "icace" not in runs["no_pairs"][1]["test"] and "icace" not in runs["cem"][1]["val"]


def test_entry_point_writes_report_table_plot_and_pairs(runs, tmp_path):
    cfg = compose_cfg(tmp_path, [f"ckpt_path={ckpt(runs, 'cem')}", f"out_dir={tmp_path / 'out'}"], "causal")
    report = run(cfg)
    saved = ICaCEReport.load(tmp_path / "out" / "icace.json")
    assert saved.to_dict() == report.to_dict()
    for f in ("icace_table.md", "icace.png", "pairs.json"):
        assert (tmp_path / "out" / f).is_file()
    assert [s.explainer for s in report.scores] == ["hard", "soft", "conexp", "approx", "approx_matched"]
    # the training run's block used the same definitions (seed 0 there, 42 here: only approx differs)
    block = runs["cem"][1]["test"]["icace"]["explainers"]
    for name in ("hard", "soft", "conexp"):
        assert report.get(name).overall["l2"] == pytest.approx(block[name]["l2"], rel=1e-5)
    assert report.n_pairs == json.loads((tmp_path / "out" / "pairs.json").read_text())["n_pairs"]


def test_proxy_explains_the_black_box(runs, tmp_path):
    cfg = compose_cfg(tmp_path, [f"ckpt_path={ckpt(runs, 'standard')}", f"proxy_ckpt={ckpt(runs, 'proxy')}",
                                 "explainers=[conexp,proxy,proxy_delta]"], "causal")
    report = run(cfg)
    assert [s.explainer for s in report.scores] == ["conexp", "proxy", "proxy_delta"]
    assert report.meta["model"]["mode"] == "standard" and "proxy" in report.get("proxy").note
    assert report.meta["proxy_checkpoint"] == str(ckpt(runs, "proxy"))
    # proxy: P(do) - N(x); proxy_delta: P(do) - P(x): they differ by the proxy's factual gap P(x) - N(x)
    assert report.get("proxy").overall["l2"] != pytest.approx(report.get("proxy_delta").overall["l2"])


def test_mask_level_explainers_on_a_sparse_model(serve_ckpts, tmp_path):
    cfg = compose_cfg(tmp_path, [f"ckpt_path={serve_ckpts['sparse']}", f"data.root={CF_DATA}", "mask.max_pairs=4",
                                 "explainers=[hard,mask,mask_hard]"], "causal")
    report = run(cfg)
    names = [s.explainer for s in report.scores]
    assert names == ["hard", "mask", "hard@mask_pairs", "mask_hard"]
    assert report.get("mask").overall["n"] == 4 == report.get("hard@mask_pairs").overall["n"]
    assert report.get("mask").note.startswith("4 of ")


def call(argv, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == USER_ERROR_EXIT and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("which,extra,message", [
    ("cem", ["split=train"], "split 'train' of data 'cebab' holds no counterfactual pairs"),
    ("cem", ["explainers=[hard,magic]"], "explainers='magic' is not valid; expected one of ['auto', 'hard'"),
    ("cem", ["explainers=[mask]"], "edit per-concept subnetwork masks"),
    ("cem", ["explainers=[proxy]"], "need proxy_ckpt="),
    ("standard", ["explainers=[hard]"], "a 'standard' model without concepts"),
    ("cem", [f"data.root={FIXTURES / 'cebab_tiny'}",
             "counterfactuals={splits: [test], prefix_chars: 1000, min_similarity: 1.0}"],
     "no counterfactual pairs found in split 'test'"),
    ("cem", ["counterfactuals={window: 0}"], "data.counterfactuals.window=0 must be an integer >= 1"),
    ("cem", ["counterfactuals={windo: 3}"], "unknown data.counterfactuals option(s) ['windo']"),
])
def test_user_errors_exit_2(runs, tmp_path, monkeypatch, capsys, which, extra, message):
    err = call([f"ckpt_path={ckpt(runs, which)}", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'c'}",
                *extra], monkeypatch, capsys)
    assert message in err


def test_counterfactual_effect_for_the_explorer(runs):
    model = CausalModel.load(ckpt(runs, "cem"), "cpu")
    pair = next(iter(model.session.datamodule().counterfactual_pairs("test")))
    view = counterfactual_effect(model, pair.base_text, pair.counterfactual_text, pair.concept, pair.after)
    before, after = torch.tensor(view["before"]), torch.tensor(view["counterfactual"])
    assert torch.allclose(torch.tensor(view["actual_change"]), after - before)
    assert torch.allclose(torch.tensor(view["predicted_change"]), torch.tensor(view["intervened"]) - before)
    assert view["errors"]["l2"] == pytest.approx(float((after - torch.tensor(view["intervened"])).norm()), abs=1e-6)
    assert view["labels"] == ["1", "2", "3", "4", "5"]
    black_box = counterfactual_effect(CausalModel.load(ckpt(runs, "standard"), "cpu"), pair.base_text,
                                      pair.counterfactual_text, pair.concept, pair.after)
    assert black_box["intervened"] is None and black_box["errors"] is None
