"""Concept-specific scorers on a constructed task whose right answer is known.

Concept ``a`` is "token 5 occurs", concept ``b`` is "token 6 occurs", independently, anywhere after a
CLS token. With a 1-block BERT read at CLS, a concept's information reaches the head only through the
attention heads (and FFN neurons) its mask keeps.

**Unit-level ground truth** (the proof a scorer chooses units by its concept): after dense training every
head either carries token 5 to CLS or token 6 or neither, measured by keeping that head alone (the concept
is solved with it alone, the other is not). Pruned once from that dense model, a scorer that chooses each
concept's units by its own loss keeps only heads that read its own token; fixed random scores (the control)
do not. The cross-mask matrix after training with recovery is NOT such a proof: each concept head adapts to
the mask it trains under, so random masks reach a diagonal matrix too (tested below).

Export, materialisation and mask-level intervention are checked on trained masks, which differ by
construction, so an off-by-one concept index cannot pass.
"""

from __future__ import annotations

import pytest
import torch
from testkit.scorer_task import CFG, CS2, data, fit

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
from sparsecbm.sparsity.scorers import SCORERS
from sparsecbm.sparsity.specificity import CrossMask

UNIT_SEEDS = (0, 1, 2, 3, 4, 5)


def build(scorer: str, seed: int):
    torch.manual_seed(seed)
    bb = Backbone("minilm", pooling="cls", pretrained=False, config=dict(CFG))
    sb = SubnetworkBackbone(bb, 2, granularity="structured", scorer=SCORERS[scorer]())
    return ConceptBottleneckModel(sb, CS2, activation="probs", dropout=0.0)


def trained(scorer: str, seed: int = 0, sparsity: float = 0.75, steps: int = 150):
    """Prune to ``sparsity`` at steps 10, 20, 30 (heads and FFN neurons), then recover until ``steps``."""
    return fit(build(scorer, seed), steps, {s: sparsity * s / 30 for s in (10, 20, 30)}, seed)


@torch.no_grad()
def accuracy(model, batch) -> list[float]:
    logits = model.concept_logits(batch["input_ids"], batch["attention_mask"])
    return [float((lg.argmax(-1) == batch["concepts"][:, k]).float().mean()) for k, lg in enumerate(logits)]


def heads_of(model):
    return next(g for g in model.backbone.unit_groups().values() if g.kind == "head")


@torch.no_grad()
def reading_heads(model, batch) -> list[set[int]]:
    """Per concept, the heads that read its token: kept alone (both concepts, every FFN neuron kept), the
    head solves that concept (>= 90%) and not the other (< 90%)."""
    heads = heads_of(model)
    full, alone = heads.masks.clone(), []
    for u in range(heads.n_units):
        only = torch.zeros_like(full)
        only[:, u] = True
        heads.set_masks(only)
        alone.append(accuracy(model, batch))
    heads.set_masks(full)
    return [{u for u, acc in enumerate(alone) if acc[k] >= 0.9 and acc[1 - k] < 0.9} for k in range(2)]


@pytest.fixture(scope="module")
def dense_models():
    """Per seed: a dense model trained 80 steps on both concepts, and its heads that read each token."""
    out = {}
    for seed in UNIT_SEEDS:
        model = fit(build("taylor", seed), 80)
        truth = reading_heads(model, data(256, 999))
        assert truth[0] and truth[1] and not truth[0] & truth[1]  # the task has a unit-level answer
        out[seed] = ({k: v.clone() for k, v in model.state_dict().items()}, truth)
    return out


def kept_heads(scorer: str, seed: int, dense_models) -> tuple[list[set[int]], list[set[int]]]:
    """Each concept's kept heads after pruning the dense model to 0.25, 0.5, 0.75 (re-scored each time)."""
    state, truth = dense_models[seed]
    model = build("taylor", seed).eval()
    model.load_state_dict(state)
    pruner = Pruner(model.backbone, concept_losses=concept_losses_of(model), scorer=SCORERS[scorer](), seed=seed)
    score = [data(32, 500 + i) for i in range(4)]
    for sparsity in (0.25, 0.5, 0.75):
        pruner.prune(sparsity, lambda: score)
    masks = heads_of(model).masks
    return [set(masks[k].nonzero().flatten().tolist()) for k in range(2)], truth


def keeps_its_own_units(kept: list[set[int]], truth: list[set[int]]) -> bool:
    """The units that read concept a's token are kept by a and not by b (and the same for b): no head a
    concept keeps reads the other concept's token, and at least one reads its own."""
    return all(kept[k] & truth[k] and not kept[k] & truth[1 - k] for k in range(2))


def alignment(kept: list[set[int]], truth: list[set[int]]) -> int:
    """Kept heads that read their own concept's token minus kept heads that read the other's (-4..4)."""
    return sum(len(kept[k] & truth[k]) - len(kept[k] & truth[1 - k]) for k in range(2))


def test_signed_taylor_keeps_the_units_that_read_its_concept_and_beats_the_control_on_every_seed(dense_models):
    for seed in UNIT_SEEDS:
        kept, truth = kept_heads("taylor_signed", seed, dense_models)
        assert keeps_its_own_units(kept, truth), (seed, kept, truth)
        assert alignment(kept, truth) > alignment(*kept_heads("random", seed, dense_models)), seed


def test_the_random_control_does_not_pass_the_unit_level_test(dense_models):
    """Random masks pass by chance on a few seeds (measured: 1 of 10), never on most."""
    passed = [seed for seed in UNIT_SEEDS if keeps_its_own_units(*kept_heads("random", seed, dense_models))]
    assert len(passed) < len(UNIT_SEEDS) / 2, passed


@pytest.mark.xfail(strict=True, reason="measured 2026-12-04 (seeds 0-9): |dL_k/dm| and (dL_k/dm)^2 rank a head that "
                                       "carries the OTHER concept's token high (removing it would lower concept k's "
                                       "loss), so taylor passes on 2 of 10 seeds and fisher on 0 (the random control: "
                                       "1); taylor_signed passes on 10 of 10")
@pytest.mark.parametrize("scorer", ["taylor", "fisher"])
def test_sign_agnostic_scorers_keep_the_units_that_read_their_concept(scorer, dense_models):
    for seed in UNIT_SEEDS:
        kept, truth = kept_heads(scorer, seed, dense_models)
        assert keeps_its_own_units(kept, truth), seed
        assert alignment(kept, truth) > alignment(*kept_heads("random", seed, dense_models)), seed


@pytest.fixture(scope="module")
def taylor_model():
    return trained("taylor")


@pytest.mark.parametrize("scorer,seed", [("taylor", 0), ("taylor", 3), ("fisher", 1), ("taylor_signed", 0)])
def test_trained_subnetworks_differ_and_each_concept_is_solved_under_its_own_mask(scorer, seed, taylor_model):
    """The mechanism after training with recovery (not a proof of unit choice: see the random control below)."""
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


def test_random_masks_reach_a_diagonal_cross_mask_matrix_too():
    """Why the cross-mask matrix is no proof of unit choice: fixed random per-concept masks, same schedule,
    give each concept head the mask it adapted to, and the matrix is diagonal-dominant as well."""
    model = trained("random", seed=0)
    stats = subnetwork_stats(model.backbone, CS2.names)
    assert stats["scorer"] == "random" and stats["concept_specific"] is False
    cm = cross_mask(model, [data(256, 999)])
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
    from sparsecbm.sparsity.mask_editing import MaskEditor

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


if __name__ == "__main__":  # the pass counts docs/guides/subnetwork-specificity.md quotes: python tests/sparsity/test_scorers.py
    torch.set_num_threads(1)
    seeds = range(10)
    dense = {}
    for s in seeds:
        m = fit(build("taylor", s), 80)
        dense[s] = ({k: v.clone() for k, v in m.state_dict().items()}, reading_heads(m, data(256, 999)))
    for name in ("taylor_signed", "taylor", "fisher", "random"):
        passed = [s for s in seeds if keeps_its_own_units(*kept_heads(name, s, dense))]
        print(f"{name}: passes on {len(passed)} of {len(seeds)} seeds {passed}")
