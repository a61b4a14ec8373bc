"""Concept-specific scorers on a constructed task whose right answer is known.

Concept ``a`` is "token 5 occurs", concept ``b`` is "token 6 occurs", independently, anywhere after a
CLS token. With a 1-block BERT read at CLS, a concept's information reaches the head only through the
attention heads (and FFN neurons) its own mask keeps. A scorer that ranks units by each concept's
own loss gives the two concepts different units, each subnetwork learns its own token, and concept
a's head reading the backbone under b's mask is at chance: the cross-mask matrix is diagonal-dominant.
Export, materialisation and mask-level intervention are checked on these masks, which differ by
construction, so an off-by-one concept index cannot pass.
"""

from __future__ import annotations

import pytest
import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.models.backbone import Backbone
from sparsecbm.models.cbm import ConceptBottleneckModel
from sparsecbm.sparsity import (
    Pruner,
    SubnetworkBackbone,
    TaylorScorer,
    cross_mask,
    export_masks,
    load_masks,
    materialize,
    subnetwork_stats,
)
from sparsecbm.sparsity.pruning import concept_losses_of
from sparsecbm.sparsity.specificity import CrossMask

CFG = {"model_type": "bert", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 8,
       "intermediate_size": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
CS2 = ConceptSet.from_config([{"name": "a"}, {"name": "b"}], {"column": "y", "values": ["0", "1"]}, values=["no", "yes"])
TOKEN = {"a": 5, "b": 6}


def data(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 64, (n, 10), generator=g)
    ids[:, 0] = 2  # CLS
    for tok in TOKEN.values():
        has = torch.randint(0, 2, (n,), generator=g).bool()
        pos = torch.randint(1, 10, (n,), generator=g)
        ids[has, pos[has]] = tok
    concepts = torch.stack([(ids == t).any(1).long() for t in TOKEN.values()], 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "concepts": concepts, "label": concepts[:, 0]}


def trained(scorer: str, seed: int = 0, sparsity: float = 0.75, steps: int = 150):
    """Prune to ``sparsity`` at steps 10, 20, 30 (heads and FFN neurons), then recover until ``steps``."""
    torch.manual_seed(seed)
    bb = Backbone("minilm", pooling="cls", pretrained=False, config=dict(CFG))
    sb = SubnetworkBackbone(bb, 2, granularity="structured", scorer={"name": scorer})
    model = ConceptBottleneckModel(sb, CS2, activation="probs", dropout=0.0)
    losses = concept_losses_of(model)
    pruner = Pruner(sb, concept_losses=losses)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train, score = [data(32, 100 + i) for i in range(20)], [data(32, 500 + i) for i in range(2)]
    for step in range(steps):
        if step in (10, 20, 30):
            model.eval()
            pruner.prune(sparsity * step / 30, lambda: score)
            model.train()
        loss = sum(losses(train[step % len(train)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def taylor_model():
    return trained("taylor")


@pytest.mark.parametrize("scorer,seed", [("taylor", 0), ("taylor", 3), ("fisher", 1)])
def test_concept_specific_scorers_give_each_concept_its_own_subnetwork(scorer, seed, taylor_model):
    model = taylor_model if (scorer, seed) == ("taylor", 0) else trained(scorer, seed)
    sb = model.backbone
    stats = subnetwork_stats(sb, CS2.names)
    assert stats["concept_specific"] is True and stats["scorer"] == scorer
    assert all(c["sparsity"] == pytest.approx(0.75) for c in stats["concepts"].values())
    assert stats["mean_jaccard"]["0"] < 0.6  # the two subnetworks share few units
    cm = cross_mask(model, [data(256, 999)])
    m = torch.tensor(cm.matrix)
    assert m.diagonal().min() > 0.95  # each concept solved under its own mask
    assert m[0, 1] < m[0, 0] - 0.2 and m[1, 0] < m[1, 1] - 0.2  # and much worse under the other's
    assert all(cm.own_best.values()) and all(v > 0.2 for v in cm.specificity.values())


def test_magnitude_is_a_shared_mask_baseline():
    model = trained("magnitude")
    stats = subnetwork_stats(model.backbone, CS2.names)
    assert stats["concept_specific"] is False and stats["mean_jaccard"]["0"] == 1.0
    m = torch.tensor(cross_mask(model, [data(256, 999)]).matrix)
    torch.testing.assert_close(m[:, 0], m[:, 1])  # the same subnetwork: no mask is any concept's own


def test_export_and_materialize_follow_the_concept_index(taylor_model, tmp_path):
    sb = taylor_model.backbone
    masks = load_masks(export_masks(sb, CS2.names, tmp_path / "masks.safetensors"))
    for name in sb.layer_names:
        assert torch.equal(masks["a"][name], sb.concept_mask(name, 0))
        assert torch.equal(masks["b"][name], sb.concept_mask(name, 1))
    assert any(not torch.equal(masks["a"][n], masks["b"][n]) for n in sb.layer_names)
    b = data(8, 7)
    with torch.no_grad():
        own = [sb.concept_states(k, b["input_ids"], b["attention_mask"]) for k in range(2)]
        got = materialize(sb, 1)(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    torch.testing.assert_close(got, own[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, own[0], atol=1e-3)


def test_mask_intervention_edits_only_its_concept(taylor_model):
    from sparsecbm.sparsity.intervention import MaskEditor

    b = data(1, 11)
    editor = MaskEditor(taylor_model, mask_portion=0.3)
    before_a, before_b = editor.snapshot(0), editor.snapshot(1)
    with torch.no_grad():
        states = taylor_model.backbone.token_states(b["input_ids"], b["attention_mask"])
    wrong = 1 - int(b["concepts"][0, 1])
    edit = editor.intervene(1, b["input_ids"], b["attention_mask"], wrong, restore=False)
    assert edit.swapped > 0 and edit.sparsity_after == pytest.approx(edit.sparsity_before)
    assert all(torch.equal(before_a[n], m) for n, m in editor.snapshot(0).items())
    assert any(not torch.equal(before_b[n], m) for n, m in editor.snapshot(1).items())
    with torch.no_grad():
        after = taylor_model.backbone.token_states(b["input_ids"], b["attention_mask"])
    assert torch.equal(after[0], states[0]) and not torch.allclose(after[1], states[1])
    editor.reset()


def test_scores_are_the_same_batched_and_naive():
    """The one-pass (batched, gathered) unit-variable gradients equal K single passes'."""
    b = data(16, 3)
    out = {}
    for impl in ("batched", "naive"):
        torch.manual_seed(0)
        bb = Backbone("minilm", pooling="cls", pretrained=False, config=dict(CFG))
        sb = SubnetworkBackbone(bb, 2, granularity="structured", impl=impl, scorer=TaylorScorer(batches=1))
        model = ConceptBottleneckModel(sb, CS2, activation="probs", dropout=0.0).eval()
        pruner = Pruner(sb, concept_losses=concept_losses_of(model))
        pruner.prune(0.5, lambda: [b])  # gathered units from here on
        out[impl] = pruner.scorer.scores(sb, pruner.context(lambda: [b]))
    for name, s in out["batched"].items():
        torch.testing.assert_close(s, out["naive"][name], atol=1e-6, rtol=1e-4)
        assert s.shape[0] == 2 and not torch.allclose(s[0], s[1])


def test_cross_mask_specificity_arithmetic():
    cm = CrossMask.from_matrix(["x", "y", "z"], torch.tensor([[0.9, 0.5, 0.3], [0.2, 0.4, 0.6], [0.1, 0.1, 0.1]]))
    assert cm.specificity["x"] == pytest.approx(0.5) and cm.specificity["y"] == pytest.approx(0.0, abs=1e-6)
    assert cm.own_best == {"x": True, "y": False, "z": True}
