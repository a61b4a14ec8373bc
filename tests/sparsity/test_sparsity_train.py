"""SparseCBM end to end on the smoke config: pruning reaches its target, reports, export, reload."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from testkit import TINY_BERT

from sparsecbm.checkpoint import load_model
from sparsecbm.sparsity import load_masks, materialize
from sparsecbm.train import train

SMOKE = ["experiment=smoke", "trainer.max_epochs=2", *TINY_BERT]


@pytest.mark.parametrize("sparsity,extra", [
    ("magnitude", []),
    ("obert", ["sparsity.scorer.batches=2", "sparsity.schedule.every=4"]),
    ("movement", ["sparsity.impl=naive"]),
    ("neuron", ["sparsity.schedule.scope=global"]),
    ("obert", ["sparsity.granularity=structured", "sparsity.scorer.batches=2", "sparsity.schedule.every=4"]),
    ("structured", ["sparsity.schedule.end=1.0", "sparsity.scorer.batches=2"]),  # the default: Taylor, top blocks
    ("movement", ["sparsity.granularity=structured"]),
    ("fisher", ["sparsity.schedule.scope=global", "sparsity.scorer.batches=1"]),
    ("structured", ["sparsity/scorer=random"]),  # the control: a scorer picked from the config group
])
def test_train_sparse(cfg_factory, tmp_path, sparsity, extra):
    results, objs = train(cfg_factory([*SMOKE, f"sparsity={sparsity}", "sparsity.schedule.final_sparsity=0.5", *extra]))
    sub = results["subnetworks"]
    assert sub["target_sparsity"] == pytest.approx(0.5)
    for stats in sub["concepts"].values():
        assert stats["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert (tmp_path / "subnetworks.csv").is_file() and (tmp_path / "subnetworks.png").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["subnetworks"]["jaccard"]) >= {"food|ambiance", "service|noise"}
    # the selected checkpoint is at the final sparsity; concept-specific scorers say so, magnitude does not
    assert saved["subnetworks"]["target_sparsity"] == pytest.approx(saved["subnetworks"]["final_sparsity"])
    control = "sparsity/scorer=random" in extra
    assert saved["subnetworks"]["concept_specific"] is (sparsity != "magnitude" and not control)
    assert saved["subnetworks"]["scorer"] == ("random" if control else saved["subnetworks"]["scorer"])
    cm = saved["subnetworks"]["cross_mask"]
    assert len(cm) == 4 and all(len(row) == 4 and all(0 <= v <= 1 for v in row) for row in cm)
    assert set(saved["subnetworks"]["specificity"]) == {"food", "ambiance", "service", "noise"}
    assert (tmp_path / "cross_mask.png").is_file()
    # the best checkpoint is at the final sparsity and reloads offline with identical outputs
    module = objs["module"].eval()
    again, _ = load_model(results["run"]["best_checkpoint"])
    batch = next(iter(objs["datamodule"].loader("test")))
    with torch.no_grad():
        a = module.model(batch["input_ids"], batch["attention_mask"])
        b = again(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(a.label_logits, b.label_logits)
    masks = load_masks(tmp_path / "masks.safetensors")
    sb = again.backbone
    name = sb.layer_names[0]
    assert torch.equal(masks["service"][name], sb.concept_mask(name, 2))


def test_materialized_subnetwork_is_standalone(cfg_factory, tmp_path):
    results, objs = train(cfg_factory([*SMOKE, "sparsity=magnitude", "sparsity.schedule.final_sparsity=0.6"]))
    sb = objs["module"].model.backbone.eval()
    batch = next(iter(objs["datamodule"].loader("test")))
    standalone = materialize(sb, 1).eval()
    assert not any("Masked" in type(m).__name__ for m in standalone.modules())
    with torch.no_grad():
        expected = sb.concept_states(1, batch["input_ids"], batch["attention_mask"])
        got = standalone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    standalone.save_pretrained(tmp_path / "food_subnetwork")
    from transformers import AutoModel

    assert AutoModel.from_pretrained(tmp_path / "food_subnetwork") is not None


def test_sparsity_none_is_plain_cbm(cfg_factory):
    results, objs = train(cfg_factory([*SMOKE[:1], *TINY_BERT, "sparsity=none"]))
    assert "subnetworks" not in results and not hasattr(objs["module"].model.backbone, "masked_layers")


class StopAfterOneStep(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.should_stop = True


def test_a_run_that_never_reaches_the_final_sparsity_fails(cfg_factory):
    with pytest.raises(ValueError, match=r"window ends at step 18 \(1.5 fraction\), after the 12 steps training runs, "
                                         r"so the final sparsity 0.5 would never be reached"):
        train(cfg_factory([*SMOKE, "sparsity=magnitude", "sparsity.schedule.final_sparsity=0.5",
                           "sparsity.schedule.end=1.5"]))
    with pytest.raises(RuntimeError, match=r"training ended with the masks at sparsity 0.0000, never the final 0.5 "
                                           r"\(pruning window: steps 0..7, training ran 1 steps\)"):
        train(cfg_factory([*SMOKE, "sparsity=magnitude", "sparsity.schedule.final_sparsity=0.5",
                           "sparsity.schedule.init_sparsity=0.0", "sparsity.schedule.every=100",
                           "+callbacks.stop._target_=test_sparsity_train.StopAfterOneStep"]))


def test_random_control_trains_beside_the_run_and_reports_both_specificities(cfg_factory, tmp_path):
    results, _ = train(cfg_factory([*SMOKE, "sparsity=structured", "sparsity.schedule.final_sparsity=0.5",
                                    "sparsity.scorer.batches=1", "random_control=true"]))
    sub = results["subnetworks"]
    ctrl = sub["random_control"]
    saved = json.loads((tmp_path / "random_control" / "results.json").read_text())
    assert saved["subnetworks"]["scorer"] == "random" and saved["subnetworks"]["concept_specific"] is False
    assert saved["run"]["seed"] == results["run"]["seed"]
    assert saved["subnetworks"]["target_sparsity"] == pytest.approx(sub["target_sparsity"])
    assert ctrl["specificity"] == saved["subnetworks"]["specificity"]
    for c, v in sub["specificity"].items():
        assert ctrl["specificity_above_control"][c] == pytest.approx(v - ctrl["specificity"][c])
    # the control's masks are not the run's: other units per concept
    from sparsecbm.sparsity import load_masks

    own, rnd = load_masks(tmp_path / "masks.safetensors"), load_masks(tmp_path / "random_control" / "masks.safetensors")
    assert any(not torch.equal(own["food"][n], rnd["food"][n]) for n in own["food"])
    assert json.loads((tmp_path / "results.json").read_text())["subnetworks"]["random_control"]["results"].endswith(
        "random_control/results.json")
