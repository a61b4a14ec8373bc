"""Mask-level (subnetwork) intervention: sparsity kept, only the concept's mask moves, restore is exact."""

from __future__ import annotations

import pytest
import torch
from testkit.subnetworks import CS, batch, random_masks, sparse

from sparsecbm.models.cbm import ConceptBottleneckModel
from sparsecbm.sparsity.mask_editing import MaskEditor


def model_for(granularity="unstructured"):
    sb = sparse(granularity=granularity)
    random_masks(sb, 0.5)
    return ConceptBottleneckModel(sb, CS, dropout=0.0).eval()


@pytest.mark.parametrize("granularity", ["unstructured", "neuron", "head", "structured"])
def test_edit_keeps_sparsity_and_touches_one_concept(granularity):
    model = model_for(granularity)
    ids, mask = batch(1)
    editor = MaskEditor(model, mask_portion=0.2)
    others = {k: editor.snapshot(k) for k in (0, 2)}
    before_states = model.backbone.token_states(ids, mask)
    current = editor.concept_probs(1, ids, mask)[0]
    target = int(current.argmin())  # the least likely value: the edit should move toward it
    edit = editor.intervene(1, ids, mask, target, restore=False)
    assert edit.swapped > 0 and edit.sparsity_after == pytest.approx(edit.sparsity_before)
    assert edit.after_probs[target] > edit.before_probs[target]  # first-order step lowers the loss
    for k, snap in others.items():
        assert all(torch.equal(snap[n], m) for n, m in editor.snapshot(k).items())
    after_states = model.backbone.token_states(ids, mask)
    assert torch.equal(after_states[0], before_states[0]) and not torch.equal(after_states[1], before_states[1])
    editor.reset()
    torch.testing.assert_close(model.backbone.token_states(ids, mask), before_states, atol=0, rtol=0)


def test_restore_gives_identical_outputs():
    model = model_for()
    ids, mask = batch(1)
    before = model(ids, mask)
    edit = MaskEditor(model, 0.1).intervene(2, ids, mask, 0, restore=True)
    assert edit.swapped > 0
    after = model(ids, mask)
    assert torch.equal(before.label_logits, after.label_logits)
    assert all(torch.equal(a, b) for a, b in zip(before.concept_logits, after.concept_logits))


def test_errors():
    from testkit.backbones import TINY

    from sparsecbm.models.backbone import Backbone

    dense = ConceptBottleneckModel(Backbone("minilm", pretrained=False, config=dict(TINY["bert"])), CS)
    with pytest.raises(ValueError, match="needs a model trained with per-concept subnetworks"):
        MaskEditor(dense)
    with pytest.raises(ValueError, match="mask_portion must be in"):
        MaskEditor(model_for(), mask_portion=1.5)
    with pytest.raises(ValueError, match="works per example; got a batch of 2"):
        MaskEditor(model_for()).intervene(0, *batch(2), 1)


@pytest.mark.parametrize("granularity", ["neuron", "head"])
def test_subnetwork_attribution_respects_masks(granularity):
    from sparsecbm.sparsity.unit_attribution import subnetwork_attribution

    model = model_for(granularity)
    ids, mask = batch(1)
    out = subnetwork_attribution(model, 1, ids, mask, top=40)
    assert out["concept"] == "service" and set(out["blocks"]) == {"0", "1"}
    group = next(iter(model.backbone.unit_groups().values()))  # block 0
    kept = set(torch.nonzero(group.mask_units[1]).flatten().tolist())
    kind = "neurons" if granularity == "neuron" else "heads"
    listed = {i for i, _ in out["blocks"]["0"][kind]}
    assert listed and listed <= kept  # pruned units contribute exactly nothing
    assert out["blocks"]["0"][f"{kind}_kept"] == len(kept)


def test_evaluate_mask_interventions_restore_has_no_breakage():
    from sparsecbm.sparsity.mask_editing import evaluate_mask_interventions

    model = model_for()
    exs = []
    for i in range(6):
        ids, mask = batch(1, seed=i)
        exs.append({"input_ids": ids, "attention_mask": mask, "concepts": torch.tensor([[i % 3, (i + 1) % 3, 2]]),
                    "label": torch.tensor([i % 3])})
    before = model(exs[0]["input_ids"], exs[0]["attention_mask"]).label_logits
    r = evaluate_mask_interventions(model, exs[:4], exs[4:], 0.2, restore=True)
    assert r["intervened_concepts"] > 0 and 0 <= r["rectification_rate"] <= 1
    assert r["breakage_rate"] == 0.0  # restored masks leave other examples untouched
    assert r["ms_per_intervened_concept"] > 0
    online = evaluate_mask_interventions(model, exs[:4], exs[4:], 0.2, restore=False)
    assert online["mode"] == "online" and online["intervened_concepts"] == r["intervened_concepts"]
    assert torch.equal(model(exs[0]["input_ids"], exs[0]["attention_mask"]).label_logits, before)  # reset after


def test_intervene_cli_mask_level(cfg_factory, tmp_path):
    import json

    from testkit import TINY_BERT

    from sparsecbm.intervene import run
    from sparsecbm.train import train

    results, _ = train(cfg_factory(["experiment=smoke", "trainer.max_epochs=2", *TINY_BERT, "sparsity=neuron"],
                                   out=tmp_path / "run"))
    cfg = cfg_factory([f"ckpt_path={results['run']['best_checkpoint']}", "level=mask", "mask.examples=4",
                       "mask.holdout=4", "mask_portion=0.1"], name="intervene", out=tmp_path / "iv")
    run(cfg)
    saved = json.loads((tmp_path / "iv" / "mask_intervention.json").read_text())
    assert set(saved["results"]) == {"restore", "online"}
    assert saved["results"]["restore"]["breakage_rate"] in (0.0, None)
    assert saved["results"]["online"]["examples"] == 4


def _top_block_model(granularity, seed=0):
    sb = sparse(granularity=granularity, masked_layers=[-1], seed=seed)
    random_masks(sb, 0.5)
    return ConceptBottleneckModel(sb, CS, dropout=0.0).eval()


@pytest.mark.parametrize("granularity", ["unstructured", "structured"])
def test_replayed_lower_blocks_give_the_same_edit_and_run_once(granularity, monkeypatch):
    from contextlib import nullcontext

    ids, mask = batch(1)
    fast, plain = _top_block_model(granularity), _top_block_model(granularity)
    monkeypatch.setattr(plain.backbone, "reuse_unmasked_blocks", nullcontext)
    lower = fast.backbone.model.encoder.layer[0]
    calls = []
    lower.attention.register_forward_hook(lambda *a: calls.append(1))  # runs only when block 0 really computes
    with fast.backbone.reuse_unmasked_blocks():
        with torch.no_grad():
            first = fast(ids, mask)
        a = MaskEditor(fast, 0.2).intervene(1, ids, mask, 0, restore=False)
        with torch.no_grad():
            again = fast(ids, mask)
    assert len(calls) == 1  # prediction, gradient pass, re-prediction and the last prediction: block 0 ran once
    b = MaskEditor(plain, 0.2).intervene(1, ids, mask, 0, restore=False)
    assert a.swapped == b.swapped > 0 and a.per_layer == b.per_layer
    torch.testing.assert_close(torch.tensor(a.after_probs), torch.tensor(b.after_probs), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(a.before_probs), torch.tensor(b.before_probs), atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        ref = plain(ids, mask)
    torch.testing.assert_close(again.label_logits, ref.label_logits, atol=1e-6, rtol=1e-5)
    assert not torch.equal(first.concept_logits[1], again.concept_logits[1])  # the edit changed concept 1
    assert "forward" not in lower.__dict__  # the block's own forward is back
    calls.clear()
    with torch.no_grad():
        fast(ids, mask)
    assert len(calls) == 1


@pytest.mark.parametrize("granularity", ["neuron", "head", "structured"])
def test_gathered_single_pass_equals_multiplied_masks(granularity):
    model = model_for(granularity)
    ids, mask = batch(1)
    editor = MaskEditor(model, 0.2)
    for k in range(len(CS.names)):
        with torch.no_grad():
            ref = model.single_concept_logits(k, ids, mask).softmax(-1)
        torch.testing.assert_close(editor.concept_probs(k, ids, mask), ref, atol=1e-6, rtol=1e-5)
    assert model.backbone.state.gather_single is False


def test_replay_refuses_a_different_example():
    model = _top_block_model("structured")
    ids, mask = batch(1)
    with model.backbone.reuse_unmasked_blocks(), torch.no_grad():
        model(ids, mask)
        with pytest.raises(ValueError, match="same example"):
            model(*batch(1, t=9))
        other = ids.clone()
        other[0, 1] = (int(other[0, 1]) + 1) % 60 + 3  # another review of the same length
        with pytest.raises(ValueError, match=r"got another input than the one it recorded \(same shape"):
            model(other, mask)
        model(ids, mask)  # the recorded example still replays
    assert "forward" not in model.backbone.model.encoder.layer[0].__dict__
