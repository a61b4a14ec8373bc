"""The benchmark's quick configuration (schema and sanity, never speed) and the results-table generator."""

from __future__ import annotations

import json

import pytest
from testkit import TINY_DATA
from testkit.runs import fake_run

from sparsecbm.bench import amortised_updates, run
from sparsecbm.sparsity import make_scorer
from sparsecbm.tables import load_runs, table


def test_bench_quick(cfg_factory, tmp_path):
    cfg = cfg_factory([
        # k_data.root follows data.root unless it is given
        "backbone=tiny_bert", f"data.root={TINY_DATA}", "data.max_length=32",
        "steps.warmup=1", "steps.timed=2", "steps.scaling=2", "inference_reps=2", "k_scaling=[1,10]",
        "steps.score_updates=2", "steps.inference_pair=2", "steps.interventions=2",
        "length_scaling=[16]", "configs.reference_style.pad_to=64", "configs.dense_joint_cbm_pad512.pad_to=64", f"docs_path={tmp_path / 'docs/bench.md'}",
        "isolate=false",
    ], name="bench")
    result = run(cfg)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert list(saved["configs"])[0] == "dense_standard" and saved["configs"]["dense_standard"]["ratio_to_dense"] == 1.0
    for r in saved["configs"].values():
        assert r["train"]["examples_per_s"] > 0 and r["train"]["peak_rss_bytes"] > 50 * 2**20
        assert r["train"]["iqr"][0] <= r["train"]["examples_per_s"] <= r["train"]["iqr"][1]
    masked = saved["configs"]["sparse_unstructured_all"]
    assert masked["mask_bytes"] == 4 * 2 * (3 * 32 * 32 + 32 * 32 + 2 * 32 * 64) + 4  # K x masked weights, bool
    assert saved["configs"]["dense_joint_cbm"]["mask_bytes"] == 0
    assert "inference" not in saved["configs"]["reference_style"]
    ref, padded_dense = saved["configs"]["reference_style"], saved["configs"]["dense_joint_cbm_pad512"]
    assert ref["ratio_to_dense_same_padding"] == pytest.approx(
        ref["train"]["examples_per_s"] / padded_dense["train"]["examples_per_s"])
    assert ref["published_mask_bytes"] == 4 * 4 * 2 * (3 * 32 * 32 + 32 * 32 + 2 * 32 * 64)  # float32 x K x weights
    assert "float32, as published" in (tmp_path / "bench.md").read_text()
    iv = saved["configs"]["sparse_default"]["intervention"]
    assert iv["concept_level_s"] > 0 and iv["mask_level_s"] > 0
    assert "mask_level_s" not in saved["configs"]["dense_joint_cbm"]["intervention"]
    assert "intervention" not in saved["configs"]["dense_standard"]
    assert set(saved["k_scaling"]) == {"K=1", "K=10"} and set(saved["length_scaling"]) == {"T=16"}
    assert saved["machine"]["torch"] and result["configs"].keys() == saved["configs"].keys()
    assert (tmp_path / "docs/bench.md").read_text().startswith("Machine:")
    assert "Targets:" in (tmp_path / "docs/bench.md").read_text()
    checked = {(t["config"], t["metric"]) for t in saved["targets"]}
    assert ("sparse_default", "train_ratio") in checked and ("sparse_default", "mask_intervention_ms") in checked
    assert ("sparse_default", "mask_intervention_cold_ms") in checked
    assert all(isinstance(t["met"], bool) and t["value"] > 0 for t in saved["targets"])
    # what it times: the default cbm (cem: concept embeddings, attention pooling) and its Taylor updates, amortised
    sd = saved["configs"]["sparse_default"]
    assert sd["cbm"]["activation"] == "embedding" and sd["cbm"]["tokens"] == "attention"
    assert saved["configs"]["dense_standard"]["cbm"]["mode"] == "standard"
    up = sd["score_updates"]
    assert up["scorer"] == "taylor" and 1 <= up["batches"] <= 4 and up["updates"] >= 1 and up["seconds"] > 0
    plan = amortised_updates(sd["spec"]["sparsity"], saved["amortise"]["n_train"], saved["amortise"]["batch_size"],
                             saved["amortise"]["epochs"])
    assert (up["updates"], up["total_steps"]) == (plan["updates"], plan["total_steps"])
    step = sd["train"]["batch"] / sd["train"]["examples_per_s"]
    assert sd["train_amortised"]["examples_per_s"] == pytest.approx(
        sd["train"]["batch"] / (step + up["seconds"] * up["updates"] / up["total_steps"]))
    dense = saved["configs"]["dense_standard"]["train"]["examples_per_s"]
    assert sd["ratio_to_dense"] == pytest.approx(sd["train_amortised"]["examples_per_s"] / dense)
    assert sd["ratio_to_dense_no_updates"] == pytest.approx(sd["train"]["examples_per_s"] / dense)
    assert "score_updates" not in saved["configs"]["sparse_unstructured_all"]  # magnitude-free level masks, no scorer
    pair = saved["inference_pair"]
    assert pair["configs"] == ["dense_standard", "dense_cem", "sparse_default"]
    for bs in (1, 32):
        row = pair[f"batch_{bs}"]
        assert row["ratio"]["sparse_default"] == pytest.approx(row["sparse_default"]["seconds"]
                                                               / row["dense_standard"]["seconds"])
    target = next(t for t in saved["targets"] if t["metric"] == "inference_ratio@1")
    assert target["value"] == pytest.approx(pair["batch_1"]["ratio"]["sparse_default"])  # side by side
    assert set(saved["k_scaling"]["K=10"]) >= {"dense", "sparse", "dense_iqr", "sparse_iqr", "steps"}
    assert len(saved["machine"]["load_avg"]) == 3 and len(saved["load_avg_end"]) == 3
    md = (tmp_path / "bench.md").read_text()
    assert "Inference side by side" in md and "amortised over a default run" in md and "load average" in md


def test_amortised_updates_follow_the_schedule_as_the_callback_does():
    # 100 examples, batch 10, 5 epochs: 50 steps; window 0..30 (end 0.6), every 10: targets at 0 (= the start
    # level 0: no update), 10, 20, 30
    sparsity = {"schedule": {"final_sparsity": 0.7, "end": 0.6, "every": 10}}
    assert amortised_updates(sparsity, 100, 10, 5) == {"updates": 3, "total_steps": 50, "epochs": 5,
                                                       "steps_per_epoch": 10}


def test_bench_isolates_each_configuration_in_its_own_process(cfg_factory, tmp_path):
    import os

    drop = ["dense_joint_cbm", "naive_default", "sparse_neuron", "sparse_unstructured_top2", "sparse_unstructured_all",
            "naive_unstructured_all", "reference_style", "sparse_structured_all", "dense_joint_cbm_pad512", "dense_cem"]
    cfg = cfg_factory([
        "backbone=tiny_bert", f"data.root={TINY_DATA}", f"k_data.root={TINY_DATA}", "data.max_length=32",
        "steps.warmup=1", "steps.timed=2", "inference_reps=1", "k_scaling=[]", "length_scaling=[]",
        *[f"~configs.{name}" for name in drop], "targets=[{config: sparse_default, metric: train_ratio, min: 0.8}]",
        "inference_pair=[dense_standard,sparse_default]", "steps.inference_pair=2", "steps.score_updates=1",
    ], name="bench")
    result = run(cfg)
    pids = {name: r["pid"] for name, r in result["configs"].items()}
    assert set(pids) == {"dense_standard", "sparse_default"}
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert result["configs"]["sparse_default"]["intervention"]["mask_level_s"] > 0


def test_bench_targets_are_checked_against_measured_values():
    from omegaconf import OmegaConf

    from sparsecbm.bench import targets

    result = {"configs": {
        "dense": {"ratio_to_dense": 1.0, "train": {"peak_rss_bytes": 2**30}, "inference": {"batch_1_s": 0.010}},
        "sparse": {"ratio_to_dense": 0.4, "train": {"peak_rss_bytes": 3 * 2**29}, "inference": {"batch_1_s": 0.015},
                   "intervention": {"mask_level_s": 0.2}}}}
    spec = OmegaConf.create([{"config": "sparse", "metric": "train_ratio", "min": 0.5},
                             {"config": "sparse", "metric": "peak_rss_gb", "max": 2.0},
                             {"config": "sparse", "metric": "inference_ratio@1", "max": 2.0},
                             {"config": "sparse", "metric": "mask_intervention_ms", "max": 100}])
    got = [(t["metric"], round(t["value"], 3), t["met"]) for t in targets(result, spec)]
    assert got == [("train_ratio", 0.4, False), ("peak_rss_gb", 1.5, True), ("inference_ratio@1", 1.5, True),
                   ("mask_intervention_ms", 200.0, False)]
    # a target whose configuration did not run fails the bench instead of disappearing
    with pytest.raises(ValueError, match=r"configuration 'absent' \(metric train_ratio\) did not run; "
                                         r"configs that ran: \['dense', 'sparse'\]"):
        targets(result, OmegaConf.create([{"config": "absent", "metric": "train_ratio", "min": 0.5}]))
    k = targets({**result, "k_scaling": {"K=10": {"dense": 10.0, "sparse": 6.0}}},
                OmegaConf.create([{"config": "sparse", "metric": "k_train_ratio@10", "min": 0.5}]))
    assert k[0]["value"] == pytest.approx(0.6) and k[0]["met"] is True
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        targets(result, OmegaConf.create([{"config": "sparse", "metric": "speed", "min": 1}]))


def test_results_table(tmp_path):
    fake_run(tmp_path / "a", "joint", 1, 0.60)
    fake_run(tmp_path / "b", "joint", 2, 0.70)
    fake_run(tmp_path / "c", "standard", 1, 0.68)
    fake_run(tmp_path / "d", "joint", 1, 0.64, {"scorer": "obert", "granularity": "unstructured", "target_sparsity": 0.7,
                                                "masked_blocks": [4, 5],
                                                "concepts": {"food": {"sparsity": 0.68}, "noise": {"sparsity": 0.72}},
                                                "jaccard": {"food|noise": {"4": 0.5, "5": 0.3}}},
             sparsity={"masked_layers": [-2, -1]})
    fake_run(tmp_path / "e", "joint", 1, 0.50, epochs=3)
    fake_run(tmp_path / "f", "joint", 1, 0.55, cbm={"tokens": "gates", "label_sparsity": "topk"})
    fake_run(tmp_path / "h", "joint", 1, 0.60, cbm={"tokens": "attention"})
    leak = {"hard": {"acc": 0.5}, "all_ground_truth": {"acc": 0.55}, "ceiling": {"acc": 0.511},
            "leakage": {"acc": 0.2}, "residual": {"share": 0.25}}
    fake_run(tmp_path / "g", "joint", 1, 0.70, activation="probs", cbm={"residual_dim": 8}, bottleneck=leak)
    md = table(load_runs([str(tmp_path)]))
    assert ("| joint CBM (probs) [residual 8] | 1 | 5 | 70.0 | 60.0 | 80.0 | 70.0 | - | - | 50.0 | 55.0 | 51.1 | 20.0 | "
            "25.0 | 10.0 | 2.0 |") in md
    assert md.count("| - | - | - | - | - |") == 6  # runs without the bottleneck report
    assert "| joint CBM (logits) | 2 | 5 | 65.0 ± 7.1 | 55.0 ± 7.1 | 80.0 ± 0.0 | 70.0 ± 0.0 | - | - |" in md
    assert "| joint CBM (logits) | 1 | 3 | 50.0 |" in md  # other epochs: its own row, never averaged in
    assert "| SparseCBM obert/unstructured @ 0.7 (blocks 4,5) | 1 | 5 | 64.0 | 54.0 | 80.0 | 70.0 | 70.0 | 0.40 |" in md
    assert "| joint CBM (logits) [token gates, label topk] | 1 |" in md and "| standard | 1 |" in md
    assert "| joint CBM (logits) [concept attention] | 1 | 5 | 60.0 |" in md
    assert "one-hot *true* concepts: test acc 51.1, macro-F1 44.8" in md
    with pytest.raises(SystemExit):
        import sys

        from sparsecbm import tables

        sys.argv = ["tables", str(tmp_path / "empty")]
        (tmp_path / "empty").mkdir()
        tables.main()


def test_cebab_table_experiment_sweeps_every_row(cfg_factory):
    from pathlib import Path

    from omegaconf import OmegaConf

    rows = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/table_row").glob("*.yaml"))
    assert len(rows) == 14
    experiment = OmegaConf.load(Path(__file__).parents[1] / "conf/experiment/cebab_table.yaml")
    assert sorted(experiment.hydra.sweeper.params["+table_row"].split(",")) == rows
    seen = {}
    for row in rows:
        c = cfg_factory(["experiment=cebab_table", f"+table_row={row}"])
        assert c.trainer.max_epochs == 3
        sp = c.sparsity or None
        assert c.cbm.activation == ("logits" if row != "standard" else c.cbm.activation)
        seen[row] = (c.cbm.mode, sp and sp.granularity, sp and make_scorer(sp.scorer).name, sp and sp.schedule.final_sparsity,
                     sp and sp.masked_layers)
    assert seen["standard"] == ("standard", None, None, None, None)
    assert seen["joint"] == ("joint", None, None, None, None)
    assert seen["neuron_0.9"] == ("joint", "neuron", "taylor", 0.9, None)  # concept-specific by default
    assert seen["obert_0.5"] == ("joint", "unstructured", "obert", 0.5, [-3, -2, -1])
    assert seen["magnitude_0.7"] == ("joint", "unstructured", "magnitude", 0.7, [-3, -2, -1])


def test_bottleneck_table_experiment_sweeps_every_row(cfg_factory):
    from pathlib import Path

    from omegaconf import OmegaConf

    rows = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/bottleneck_row").glob("*.yaml"))
    experiment = OmegaConf.load(Path(__file__).parents[1] / "conf/experiment/bottleneck_table.yaml")
    assert sorted(experiment.hydra.sweeper.params["+bottleneck_row"].split(",")) == rows and len(rows) == 9
    seen = {}
    for row in rows:
        c = cfg_factory(["experiment=bottleneck_table", f"+bottleneck_row={row}"])
        sp = c.sparsity or None
        seen[row] = (c.cbm.mode, c.cbm.activation, c.cbm.residual_dim, c.cbm.concept_class_weight,
                     c.cbm.train_intervention_prob, sp and (make_scorer(sp.scorer).name, sp.schedule.final_sparsity, tuple(sp.masked_layers)),
                     c.trainer.max_epochs, c.cbm.label_head, c.cbm.label_class_weight, c.cbm.tokens)
    sparse = ("taylor", 0.7, (-2, -1))  # the default structured SparseCBM: concept-specific masks
    assert seen["standard"][0] == "standard"
    assert seen["strict"] == ("independent", "hard", 0, "balanced", 0.0, None, 5, "linear", "none", "attention")
    assert seen["soft_logits"] == ("joint", "logits", 0, "balanced", 0.0, None, 5, "linear", "none", "none")
    assert seen["cem"] == ("joint", "embedding", 0, "balanced", 0.5, None, 5, "linear", "none", "attention")
    assert seen["hybrid"] == ("joint", "probs", 8, "balanced", 0.25, None, 5, "linear", "none", "none")
    for row in ("strict", "soft_logits", "cem", "hybrid"):
        assert seen[f"{row}_sparse"] == seen[row][:5] + (sparse, 3) + seen[row][7:]


def test_papers_macro_f1_gets_its_own_labelled_table(tmp_path):
    for i, (seed, f1p) in enumerate([(1, 0.80), (2, 0.84)]):
        fake_run(tmp_path / f"r{i}", "joint", seed, 0.6)
        path = tmp_path / f"r{i}" / "results.json"
        r = json.loads(path.read_text())
        r["test"]["label"]["f1_papers"], r["test"]["concept"]["f1_papers"] = f1p, 0.9
        path.write_text(json.dumps(r))
    md = table(load_runs([str(tmp_path)]))
    assert "test task macro-F1 (papers' def.)" in md and "| joint CBM (logits) | 2 | 5 | 82.0 ± 2.8 | 90.0 ± 0.0 |" in md
    fake_run(tmp_path / "old", "standard", 1, 0.5)  # runs without the figure get no row there
    assert "| standard | 1 | 5 | -" not in table(load_runs([str(tmp_path)])).split("papers' def.")[-1]
