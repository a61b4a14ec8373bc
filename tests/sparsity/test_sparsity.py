"""Per-concept subnetworks: semantics, exact zeros, naive == batched, structured skipping, scorers, schedule."""

from __future__ import annotations

import pytest
import torch
from testkit.subnetworks import CS, TINY, K, batch, random_masks, sparse

from sparsecbm.models.backbone import Backbone
from sparsecbm.models.cbm import ConceptBottleneckModel
from sparsecbm.sparsity import (
    MovementScorer,
    OBertScorer,
    Pruner,
    SubnetworkBackbone,
    TaylorScorer,
    scheduled_sparsity,
)
from sparsecbm.sparsity.pruning import schedule_steps
from sparsecbm.sparsity.scorers import fisher_inverse_diagonal, obert_scores


def copy_masks(src: SubnetworkBackbone, dst: SubnetworkBackbone):
    dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("kind,granularity,layers", [
    ("bert", "unstructured", None), ("bert", "unstructured", [-1]), ("bert", "neuron", None),
    ("bert", "head", [1]), ("gpt2", "unstructured", None), ("gpt2", "neuron", [-1]), ("llama", "neuron", None),
    ("llama_mha", "head", None), ("bert", "structured", None), ("llama_mha", "structured", [-1]),
])
def test_batched_equals_naive(kind, granularity, layers):
    fast = sparse(kind, granularity, "batched", masked_layers=layers)
    random_masks(fast)
    ref = sparse(kind, granularity, "naive", masked_layers=layers)
    copy_masks(fast, ref)
    ids, mask = batch()
    a, b = fast.token_states(ids, mask), ref.token_states(ids, mask)
    assert a.shape == (K, 2, 6, 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # concepts really differ (their masks differ)
    assert not torch.allclose(a[0], a[1], atol=1e-4)


@pytest.mark.parametrize("impl", ["batched", "naive"])
def test_only_concept_k_changes(impl):
    torch.manual_seed(0)
    sb = sparse(impl=impl)
    random_masks(sb)
    model = ConceptBottleneckModel(sb, CS, activation="probs", dropout=0.0).eval()
    ids, mask = batch()
    before = model(ids, mask)
    layer = next(iter(sb.masked_layers().values()))
    layer.mask_weights[1] = ~layer.mask_weights[1]  # change concept 1's subnetwork only
    after = model(ids, mask)
    torch.testing.assert_close(after.concept_logits[0], before.concept_logits[0])
    torch.testing.assert_close(after.concept_logits[2], before.concept_logits[2])
    assert not torch.allclose(after.concept_logits[1], before.concept_logits[1])
    assert not torch.equal(after.label_logits, before.label_logits)  # the label reads all K concepts


def test_pruned_weights_contribute_exactly_zero():
    sb = sparse()
    random_masks(sb, 0.6)
    ids, mask = batch()
    before = sb.token_states(ids, mask)
    with torch.no_grad():  # blow up every weight pruned by ALL concepts: nothing may change
        for layer in sb.masked_layers().values():
            pruned_for_all = ~layer.mask_weights.any(0)
            layer.weight[pruned_for_all] = 1e6
    assert torch.equal(sb.token_states(ids, mask), before)
    with torch.no_grad():  # a weight pruned for concept 0 only changes the others, never concept 0
        layer = next(iter(sb.masked_layers().values()))
        i, j = torch.nonzero(~layer.mask_weights[0] & layer.mask_weights[1])[0]
        layer.weight[i, j] += 5.0
    after = sb.token_states(ids, mask)
    assert torch.equal(after[0], before[0]) and not torch.equal(after[1], before[1])


def test_shared_weights_train_through_masks():
    sb = sparse()
    random_masks(sb, 0.5)
    sb.train()
    ids, mask = batch()
    sb.token_states(ids, mask).pow(2).sum().backward()
    for layer in sb.masked_layers().values():
        grad = layer.base_layer.weight.grad
        used = layer.mask_weights.any(0)
        assert torch.all(grad[~used] == 0) and grad[used].abs().sum() > 0


def test_structured_skips_compute_and_matches_masked_dense():
    sb = sparse(granularity="neuron")
    random_masks(sb, 0.75)
    ids, mask = batch()
    widths = []
    producer = next(lyr for lyr in sb.masked_layers().values() if lyr.role == "producer")
    h = producer.register_forward_hook(lambda m, i, o: widths.append(o.shape[-1]))
    compact = sb.token_states(ids, mask)
    sb.state.compact = False
    dense = sb.token_states(ids, mask)
    h.remove()
    torch.testing.assert_close(compact, dense, atol=1e-5, rtol=1e-5)
    assert widths == [8, 32]  # 25% of 32 FFN neurons computed, vs all 32 when multiplying by masks


def test_structured_granularity_prunes_heads_and_neurons_in_every_projection():
    sb = sparse(granularity="structured")
    assert sorted(sb.unit_groups()) == [f"encoder.layer.{b}.{k}" for b in (0, 1) for k in ("head", "neuron")]
    Pruner(sb).prune(0.5)
    for name, group in sb.unit_groups().items():
        assert group.mask_units.sum(1).tolist() == [group.n_units // 2] * K, name  # 1 of 2 heads, 16 of 32 neurons
    roles = {n.split("encoder.layer.0.")[1]: lyr.role for n, lyr in sb.masked_layers().items() if ".0." in n}
    assert roles == {"attention.self.query": "producer", "attention.self.key": "producer",
                     "attention.self.value": "producer", "attention.output.dense": "consumer",
                     "intermediate.dense": "producer", "output.dense": "consumer"}
    ids, mask = batch()
    widths = {}
    hooks = [lyr.register_forward_hook(lambda m, i, o, n=n: widths.setdefault(n, o.shape[-1]) and None)
             for n, lyr in sb.masked_layers().items() if lyr.role == "producer"]
    compact = sb.token_states(ids, mask)
    for h in hooks:
        h.remove()
    assert widths["encoder.layer.0.attention.self.query"] == 8 and widths["encoder.layer.0.intermediate.dense"] == 16
    sb.state.compact = False
    torch.testing.assert_close(compact, sb.token_states(ids, mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="granularity=structured is supported for .*not 'gpt2' \\(no head structure"):
        sparse("gpt2", "structured")


def test_masks_are_bool_and_small():
    sb = sparse()
    masked = sum(lyr.weight.numel() for lyr in sb.masked_layers().values())
    assert all(b.dtype == torch.bool for n, b in sb.named_buffers() if n.endswith("mask_weights"))
    assert sb.mask_bytes() == K * masked + 4  # one byte per weight per concept (+ the sparsity level)
    shared = sparse(shared=True)
    assert shared.mask_bytes() == masked + 4 and shared.token_states(*batch()).shape == (2, 6, 16)


def test_schedule_values():
    assert scheduled_sparsity(0.0, 0.0, 0.8, "cubic") == 0.0
    assert scheduled_sparsity(0.5, 0.0, 0.8, "cubic") == pytest.approx(0.8 - 0.8 * 0.125)
    assert scheduled_sparsity(1.0, 0.0, 0.8, "cubic") == pytest.approx(0.8)
    assert scheduled_sparsity(0.25, 0.2, 0.6, "linear") == pytest.approx(0.3)
    assert scheduled_sparsity(2.0, 0.2, 0.6, "linear") == pytest.approx(0.6)
    assert schedule_steps({"start": 1, "end": 2.5, "unit": "epoch"}, 100, 10) == (10, 25)
    assert schedule_steps({"start": 0.1, "end": 0.5, "unit": "fraction"}, 200, 10) == (20, 100)
    with pytest.raises(ValueError, match="unit='hours' is not valid"):
        schedule_steps({"start": 0, "end": 1, "unit": "hours"}, 10, 1)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_pruning(scope):
    """Magnitude keeps the largest |w| (per layer, or over all layers) and, being concept-independent,
    gives every concept the same mask: the labelled shared-mask baseline."""
    sb = sparse(schedule={"scope": scope})
    pruner = Pruner(sb)
    assert not pruner.scorer.concept_specific
    pruner.prune(0.75)
    layers = sb.masked_layers()
    kept_min, pruned_max = [], []
    for layer in layers.values():
        m = layer.mask_weights[0]
        assert torch.equal(m, layer.mask_weights[2])  # one ranking for all concepts
        if scope == "layer":
            assert m.float().mean().item() == pytest.approx(0.25, abs=1 / m.numel())
            assert layer.weight.abs()[m].min() >= layer.weight.abs()[~m].max()
        kept_min.append(layer.weight.abs()[m].min())
        pruned_max.append(layer.weight.abs()[~m].max())
    if scope == "global":  # one threshold over every masked layer
        assert min(kept_min) >= max(pruned_max)
    overall = sb.sparsity()
    assert all(v == pytest.approx(0.75, abs=1e-3) for v in overall.values())
    assert float(sb.mask_level) == 0.75


def test_movement_scores_accumulate_per_concept():
    sb = sparse(impl="naive", scorer=MovementScorer())
    pruner = Pruner(sb)
    sb.train()
    ids, mask = batch()
    states = sb.token_states(ids, mask)
    states[1].sum().backward()  # only concept 1's subnetwork receives a gradient
    layer = next(iter(sb.masked_layers().values()))
    assert layer.mask_movement[0].abs().sum() == 0 and layer.mask_movement[2].abs().sum() == 0
    expected = -(layer.weight.detach() * layer.weight.grad)  # masks are all-ones: dL/dW_eff == dL/dW
    torch.testing.assert_close(layer.mask_movement[1], expected)
    pruner.prune(0.5)
    assert not torch.equal(layer.mask_weights[1], layer.mask_weights[0])


def test_fisher_inverse_diagonal_brute_force():
    g = torch.randn(5, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    diag = fisher_inverse_diagonal(g, block=4, damp=0.1)  # blocks [0:4], [4:8], [8:10]
    expected = []
    for s, e in ((0, 4), (4, 8), (8, 10)):
        gb = g[:, s:e]
        fisher = 0.1 * torch.eye(e - s, dtype=torch.float64) + gb.T @ gb / 5
        expected.append(torch.linalg.inv(fisher).diagonal())
    torch.testing.assert_close(diag, torch.cat(expected))
    w = torch.randn(2, 5, dtype=torch.float64)
    grads = torch.randn(3, 2, 5, dtype=torch.float64)
    scores = obert_scores(w, grads, block=10, damp=0.5)  # relative damping: λ = 0.5 · mean(g²)
    lam = 0.5 * grads.pow(2).mean()
    fisher = lam * torch.eye(10, dtype=torch.float64) + grads.reshape(3, -1).T @ grads.reshape(3, -1) / 3
    torch.testing.assert_close(scores.reshape(-1), w.reshape(-1) ** 2 / (2 * torch.linalg.inv(fisher).diagonal()))


def test_obert_scores_are_per_concept():
    sb = sparse(scorer=OBertScorer(batches=2, block=16, damp=0.01))
    model = ConceptBottleneckModel(sb, CS, dropout=0.0).eval()

    def concept_loss(k, b):
        logits = model.single_concept_logits(k, b["input_ids"], b["attention_mask"])
        return torch.nn.functional.cross_entropy(logits, b["concepts"][:, k])

    ids, mask = batch(4)
    batches = [{"input_ids": ids, "attention_mask": mask, "concepts": torch.tensor([[0, 1, 2]] * 4)}] * 2
    Pruner(sb, concept_loss).prune(0.5, lambda: batches)
    layers = list(sb.masked_layers().values())
    assert all(lyr.mask_weights.float().mean().item() == pytest.approx(0.5, abs=0.01) for lyr in layers)
    differ = sum(int((lyr.mask_weights[0] != lyr.mask_weights[1]).sum()) for lyr in layers)
    assert differ > 0  # scores come from each concept's own loss, so the subnetworks differ


def test_structured_pruning_keeps_whole_units():
    sb = sparse(granularity="head")
    Pruner(sb).prune(0.5)
    group = next(iter(sb.unit_groups().values()))
    assert group.mask_units.sum(1).tolist() == [1, 1, 1]  # 1 of 2 heads per concept
    q = next(lyr for n, lyr in sb.masked_layers().items() if n.endswith("query"))
    rows = q.concept_mask(0).all(1)
    assert rows.sum() == 8 and torch.equal(rows, q.concept_mask(0).any(1))  # whole rows, 1 head = 8 rows


def test_bad_settings():
    with pytest.raises(ValueError, match="granularity=head is supported for .*not 'gpt2'"):
        sparse("gpt2", "head")
    with pytest.raises(ValueError, match="masked_layers: block 5 does not exist; the model has blocks 0..1"):
        sparse(masked_layers=[5])
    with pytest.raises(ValueError, match="impl='fast' is not valid"):
        sparse(impl="fast")
    with pytest.raises(ValueError, match="matched no Linear layer"):
        sparse(target_modules=["nonexistent"])
    with pytest.raises(ValueError, match=r"scorer taylor needs granularity in \('neuron', 'head', 'structured'\), "
                                         r"not unstructured \(for unstructured use one of \['magnitude', 'movement', 'obert', 'random'\]"):
        Pruner(sparse(scorer=TaylorScorer()))
    with pytest.raises(ValueError, match="scorer taylor needs concept_losses"):
        Pruner(sparse(granularity="neuron", scorer=TaylorScorer())).prune(0.5, lambda: [])
    with pytest.raises(ValueError, match=r"sparsity.scorer \{'name': 'taylor'\} has no _target_ \(a Scorer class\); "
                                         r"pick one with sparsity/scorer=<name>"):
        sparse(scorer={"name": "taylor"})  # a scorer is chosen by its _target_ (the config group), not a name
    with pytest.raises(ValueError, match="sparsity.scorer.name=obert does not match its _target_"):
        sparse(scorer={"_target_": "sparsecbm.sparsity.TaylorScorer", "name": "obert"})
    with pytest.raises(ValueError, match=r"schedule: unknown setting\(s\) \['ends'\]"):
        sparse(schedule={"ends": 0.5})
    with pytest.raises(ValueError, match="schedule.scope='local' is not valid"):
        sparse(schedule={"scope": "local"})


@pytest.mark.parametrize("granularity", ["unstructured", "structured"])
def test_inference_weight_cache_follows_mask_and_weight_changes(granularity):
    fast, ref = sparse(granularity=granularity), sparse(granularity=granularity, impl="naive")
    random_masks(fast, 0.5)
    ids, mask = batch()
    with torch.no_grad():
        first = fast.token_states(ids, mask)
        random_masks(fast, 0.5, seed=7)  # new masks: the cached per-concept weights must not be reused
        layer = next(iter(fast.masked_layers().values()))
        layer.base_layer.weight.mul_(1.5)  # an optimizer-like in-place update
        second = fast.token_states(ids, mask)
        copy_masks(fast, ref)
        assert not torch.allclose(first, second, atol=1e-4)
        torch.testing.assert_close(second, ref.token_states(ids, mask), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast.token_states(ids, mask), second)  # served from the cache


def test_schedule_reaches_final_sparsity_exactly_at_end():
    from sparsecbm.sparsity import Schedule

    sched = Schedule(final_sparsity=0.7, start=0.0, end=1.0, every=7)
    window = sched.window(total_steps=30, steps_per_epoch=10)
    assert window == (0, 29)  # steps run 0..29: end=1.0 is the last step, not step 30
    targets = {s: sched.target(s, window) for s in range(30)}
    assert targets[29] == pytest.approx(0.7) and max(t for t in targets.values() if t is not None) == pytest.approx(0.7)
    assert [s for s, t in targets.items() if t is not None] == [0, 7, 14, 21, 28, 29]
    assert Schedule(end=0.5).window(30, 10) == (0, 15) and Schedule(start=2, end=3, unit="epoch").window(30, 10) == (20, 29)
    with pytest.raises(ValueError, match="window ends at step 50 .* would never be reached"):
        Schedule(start=2, end=5, unit="epoch").window(30, 10)
    with pytest.raises(ValueError, match=r"final_sparsity=1.0 is not valid; expected a value in \[0, 1\)"):
        Schedule(final_sparsity=1.0)


@pytest.mark.parametrize("granularity,layers", [("structured", None), ("structured", [-1]), ("neuron", None)])
def test_global_scope_ranks_units_per_weight_and_meets_the_weight_target(granularity, layers):
    """Heads (many weights each) and FFN neurons (few) ranked together: the *weight* sparsity is the target."""
    torch.manual_seed(0)
    bb = Backbone("minilm", pretrained=False, config={**TINY["bert"], "intermediate_size": 128})
    sb = SubnetworkBackbone(bb, K, granularity=granularity, masked_layers=layers, schedule={"scope": "global"})
    for target in (0.3, 0.7):
        Pruner(sb).prune(target)
        assert all(abs(v - target) <= 0.01 for v in sb.sparsity().values()), sb.sparsity()
    # ranked by score per weight: no pruned neuron (the smallest unit, never skipped for size) outranks a kept unit
    groups = sb.unit_groups()
    per_weight = {n: s[0] / groups[n].weights_per_unit for n, s in Pruner(sb).scorer.scores(sb, None).items()}
    kept_min = min(float(per_weight[n][g.mask_units[0]].min()) for n, g in groups.items() if g.mask_units[0].any())
    pruned_neurons = torch.cat([per_weight[n][~g.mask_units[0]] for n, g in groups.items() if g.kind == "neuron"])
    assert int((pruned_neurons > kept_min).sum()) <= 1  # the last one may not fit in the budget left


def test_movement_works_with_structured_units():
    sb = sparse(granularity="structured", impl="batched", scorer=MovementScorer())
    pruner = Pruner(sb)
    sb.train()
    ids, mask = batch()
    Pruner(sb).prune(0.5)  # gathered units: the gradients reach the scorer scattered back to full rows
    sb.token_states(ids, mask)[1].sum().backward()  # only concept 1's subnetwork receives a gradient
    for group in sb.unit_groups().values():
        assert group.mask_movement[0].abs().sum() == 0 and group.mask_movement[2].abs().sum() == 0
        assert group.mask_movement[1].abs().sum() > 0
        assert torch.all(group.mask_movement[1][~group.mask_units[1]] == 0)  # pruned units saw no gradient
    pruner.prune(0.75)
    neurons = [g for g in sb.unit_groups().values() if g.kind == "neuron"]
    assert all(not torch.equal(g.mask_units[1], g.mask_units[0]) for g in neurons)
