"""Mask-level (subnetwork) intervention: sparsity kept, only the concept's mask moves, restore is exact."""

from __future__ import annotations

import pytest
import torch
from test_sparsity import CS, batch, random_masks, sparse

from sparsecbm.models.cbm import ConceptBottleneckModel
from sparsecbm.sparsity.intervention import MaskEditor


def model_for(granularity="unstructured"):
    sb = sparse(granularity=granularity)
    random_masks(sb, 0.5)
    return ConceptBottleneckModel(sb, CS, dropout=0.0).eval()


@pytest.mark.parametrize("granularity", ["unstructured", "neuron", "head"])
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
    from test_backbone import TINY

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
    from sparsecbm.sparsity.attribution import subnetwork_attribution

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
