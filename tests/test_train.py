"""End-to-end runs on the smoke config: every mode, determinism, resume, evaluate round trip."""

from __future__ import annotations

import json

import pytest
import torch
from testkit import TINY_BERT

from sparsecbm.errors import CheckpointError
from sparsecbm.evaluate import evaluate
from sparsecbm.train import train


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("mode", ["standard", "joint", "sequential", "independent"])
def test_modes_on_smoke(cfg_factory, tmp_path, mode):
    extra = ["trainer.max_epochs=2", "cbm.label_epochs=1", "keep_last_checkpoint=true"] if mode == "sequential" else []
    results, objs = train(cfg_factory(["experiment=smoke", f"cbm={mode}", *extra]))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["model"]["mode"] == mode and saved["run"]["train_examples_per_s"] > 0
    assert saved["data"]["sizes"] == {"train": 48, "dev": 32, "test": 32}
    assert 0 <= saved["test"]["label"]["acc"] <= 1 and 0 <= saved["test"]["label"]["f1"] <= 1
    # a finished run removes last.ckpt (it only serves to resume) unless keep_last_checkpoint=true
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() == (mode == "sequential")
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert "true_concept_logreg" in saved["reference"] and saved["model"]["n_params"]["total"] > 22_000_000
    assert saved["test"]["bottleneck"]["ceiling"]["acc"] == pytest.approx(
        saved["reference"]["true_concept_logreg"]["test_acc"]
    )
    if mode == "standard":
        assert "concept" not in saved["test"] and saved["model"]["activation"] is None
        assert "intervention" not in saved["test"] and "leakage" not in saved["test"]["bottleneck"]
    else:
        assert set(saved["test"]["per_concept"]) == {"food", "ambiance", "service", "noise"}
        assert saved["model"]["activation"] == ("probs" if mode == "independent" else "logits")
    if mode == "sequential":
        # X->C was frozen during the last (C->Y) epoch: the best checkpoint comes from that epoch,
        # and its backbone equals the backbone at the end of the concept phase
        assert saved["run"]["best_val_select"] >= 0
        best, last = (
            load(tmp_path / "checkpoints" / "best.ckpt"),
            load(tmp_path / "checkpoints" / "last.ckpt"),
        )
        assert torch.equal(best["model.label_head.weight"], last["model.label_head.weight"])


def test_sequential_freezes_backbone(cfg_factory, tmp_path):
    import lightning as L

    snapshots = {}

    class Snap(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            snapshots[trainer.current_epoch] = {k: v.clone() for k, v in module.state_dict().items()}

    cfg = cfg_factory(
        ["experiment=smoke", "cbm=sequential", "trainer.max_epochs=2", "cbm.label_epochs=1", *TINY_BERT]
    )
    from sparsecbm.train import build

    dm, module, trainer = build(cfg)
    trainer.callbacks.append(Snap())
    trainer.fit(module, datamodule=dm)
    e0, e1 = snapshots[0], snapshots[1]
    backbone = [k for k in e0 if k.startswith("model.backbone.") or k.startswith("model.concept_heads.")]
    assert backbone and all(torch.equal(e0[k], e1[k]) for k in backbone)
    assert not torch.equal(e0["model.label_head.weight"], e1["model.label_head.weight"])


def test_same_seed_same_numbers(cfg_factory, tmp_path):
    overrides = ["experiment=smoke", "trainer.max_epochs=2", "keep_last_checkpoint=true", *TINY_BERT]
    a, _ = train(cfg_factory(overrides, out=tmp_path / "a"))
    b, _ = train(cfg_factory(overrides, out=tmp_path / "b"))
    assert a["test"] == b["test"] and a["val"] == b["val"]
    sa, sb = load(tmp_path / "a/checkpoints/last.ckpt"), load(tmp_path / "b/checkpoints/last.ckpt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c, _ = train(cfg_factory([*overrides, "seed=7"], out=tmp_path / "c"))
    sc = load(tmp_path / "c/checkpoints/last.ckpt")
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_after_crash_matches_uninterrupted(cfg_factory, tmp_path):
    overrides = ["experiment=smoke", "trainer.max_epochs=3", "keep_last_checkpoint=true", *TINY_BERT]
    full, _ = train(cfg_factory(overrides, out=tmp_path / "full"))
    # last.ckpt is the final epoch's state whichever epoch was best (Lightning 2.6's save_last is not)
    last = torch.load(tmp_path / "full/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 18)
    crashed = tmp_path / "crashed"
    with pytest.raises(SystemExit, match="simulated crash"):
        train(
            cfg_factory(
                [*overrides, "+callbacks.crash._target_=testkit.callbacks.Crash", "+callbacks.crash.epoch=1"],
                out=crashed,
            )
        )
    assert (crashed / "checkpoints" / "last.ckpt").is_file()
    assert not list(crashed.glob("checkpoints/*.tmp"))  # atomic writes leave no partial files
    resumed, _ = train(cfg_factory([*overrides, "ckpt_path=last"], out=crashed))
    assert resumed["run"]["resumed_from"].endswith("last.ckpt")
    assert resumed["test"] == full["test"] and resumed["val"] == full["val"]
    sf, sr = load(tmp_path / "full/checkpoints/last.ckpt"), load(crashed / "checkpoints/last.ckpt")
    assert all(torch.equal(sf[k], sr[k]) for k in sf)


def test_resume_missing_checkpoint_is_an_error(cfg_factory, tmp_path):
    with pytest.raises(CheckpointError, match="cannot resume: checkpoint .*last.ckpt does not exist"):
        train(cfg_factory(["experiment=smoke", "ckpt_path=last", *TINY_BERT]))


def test_evaluate_round_trip(cfg_factory, tmp_path):
    trained, _ = train(
        cfg_factory(["experiment=smoke", "cbm.activation=probs", *TINY_BERT], out=tmp_path / "run")
    )
    ckpt = tmp_path / "run/checkpoints/best.ckpt"
    cfg = cfg_factory([f"ckpt_path={ckpt}", "accelerator=cpu"], name="evaluate", out=tmp_path / "eval")
    again = evaluate(cfg)
    saved = json.loads((tmp_path / "eval/results.json").read_text())
    for split in ("val", "test"):
        for key in ("label", "concept"):
            assert saved[split][key] == pytest.approx(trained[split][key], abs=1e-6)
        for name, values in trained[split]["per_concept"].items():
            assert saved[split]["per_concept"][name] == pytest.approx(values, abs=1e-6)
    assert again["model"]["activation"] == "probs"
    # the training run's config, seed and epochs (for sparsecbm.tables); this command's own config beside it
    assert saved["config"]["cbm"]["activation"] == "probs" and saved["run"]["seed"] == 42
    assert saved["run"]["epochs"] == 1 and saved["evaluate_config"]["ckpt_path"] == str(ckpt)
    assert saved["test"]["bottleneck"]["hard"] == pytest.approx(trained["test"]["bottleneck"]["hard"])
    # a checkpoint's concepts must match the data it is evaluated on
    bad = cfg_factory(
        [f"ckpt_path={ckpt}", "data=imdb_c", f"data.root={tmp_path}"], name="evaluate", out=tmp_path / "e2"
    )
    with pytest.raises(ValueError, match="but the checkpoint was trained on concepts \\['food'"):
        evaluate(bad)
    with pytest.raises(ValueError, match="not written by sparsecbm"):
        torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
        evaluate(
            cfg_factory([f"ckpt_path={tmp_path / 'foreign.ckpt'}"], name="evaluate", out=tmp_path / "e3")
        )


@pytest.mark.parametrize(
    "overrides",
    [
        ["cbm=cem"],
        ["cbm=hybrid", "cbm.residual_dim=4"],
        [
            "cbm=cem",
            "cbm.embedding_dim=8",
            "sparsity=neuron",
            "trainer.max_epochs=2",
            "sparsity.schedule.final_sparsity=0.5",
        ],
    ],
)
def test_ceiling_leakage_block_and_new_bottlenecks(cfg_factory, tmp_path, overrides):
    """cem / hybrid train end to end; results.json has the ceiling/leakage block; reload, intervene, explain."""
    import sparsecbm
    from sparsecbm.interpret import intervene
    from sparsecbm.interpret.explainer import concept_contributions, label_layer_summary

    results, objs = train(cfg_factory(["experiment=smoke", *TINY_BERT, *overrides]))
    saved = json.loads((tmp_path / "results.json").read_text())
    b = saved["test"]["bottleneck"]
    assert {
        "ceiling",
        "ceiling_lookup",
        "soft",
        "hard",
        "all_ground_truth",
        "ceiling_on_predicted",
        "leakage",
        "above_ceiling",
    } <= set(b)
    label = saved["test"]["label"]
    assert b["soft"] == pytest.approx({"acc": label["acc"], "f1": label["f1"]}, abs=1e-6)  # re-derived
    assert 0 <= label["f1_papers"] <= 1
    assert b.get("prototypes_from") == ("train" if "hard_value_only" in b else None)
    assert b["leakage"]["acc"] == pytest.approx(b["soft"]["acc"] - b["hard"]["acc"])
    assert b["ceiling"]["acc"] == pytest.approx(saved["reference"]["true_concept_logreg"]["test_acc"])
    assert saved["test"]["intervention"]["all_ground_truth"] == b["all_ground_truth"]
    assert ("residual" in b) == ("cbm=hybrid" in overrides)
    session = sparsecbm.load(results["run"]["best_checkpoint"])
    result = intervene(session, "The food was cold.", {"food": "Positive"})
    assert result.after.concepts["food"] == "Positive"
    model = session.model
    batch = next(iter(objs["datamodule"].loader("test")))
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
        pred = out.label_logits.argmax(-1)
        contrib = concept_contributions(model, out, pred)
    logit = out.label_logits.gather(1, pred[:, None]).squeeze(1)
    torch.testing.assert_close(contrib.sum(-1) + model.label_head.bias[pred], logit)
    assert contrib.shape[1] == 4 + ("cbm=hybrid" in overrides)
    assert all(len(used) >= 1 for used in label_layer_summary(model).values())


def test_checkpoint_selection_on_task_and_concepts(cfg_factory, tmp_path):
    """model.select=label+concept: val/select is the mean of val task and concept macro-F1 every epoch,
    and the best checkpoint is the epoch that maximises it."""
    import pandas as pd

    results, _ = train(
        cfg_factory(["experiment=smoke", "trainer.max_epochs=3", "model.select=label+concept", *TINY_BERT])
    )
    m = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["val/select"])
    m = m[m["epoch"] < 3]  # the training epochs (then the best checkpoint is validated once more)
    assert len(m) == 3
    expected = (m["val/label/f1"] + m["val/concept/f1"]) / 2
    assert m["val/select"].tolist() == pytest.approx(expected.tolist())
    assert results["run"]["best_val_select"] == pytest.approx(expected.max())
    with pytest.raises(ValueError, match="model.select='concept' is not valid; expected one of"):
        train(cfg_factory(["experiment=smoke", "model.select=concept", *TINY_BERT], out=tmp_path / "bad"))
