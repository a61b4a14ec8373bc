"""Head and structured masks on grouped-query attention (Llama, Qwen2, Mistral, Gemma 2, Gemma 3): per-concept
query heads, key/value heads kept when any query head of their group is, the batched gathered pass equal to
the naive one, pruning, scope=global, reports, unit attribution, mask edits, materialise / export, training."""

from __future__ import annotations

import pytest
import torch
from testkit.scorer_task import CS2, data, fit
from testkit.subnetworks import batch

from sparsecbm.models.backbone import Backbone
from sparsecbm.models.cbm import ConceptBottleneckModel
from sparsecbm.sparsity import (
    Pruner,
    SubnetworkBackbone,
    export_masks,
    load_masks,
    materialize,
    subnetwork_stats,
)
from sparsecbm.sparsity.pruning import concept_losses_of
from sparsecbm.sparsity.unit_attribution import subnetwork_attribution

# 6 query heads in 2 groups of 3 (head_dim 8), as SmolLM2's 9 / 3
BASE = {"vocab_size": 64, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 6,
        "num_key_value_heads": 2, "intermediate_size": 48, "bos_token_id": 1, "eos_token_id": 2,
        "max_position_embeddings": 64, "attention_dropout": 0.0}
FAMILIES = {"llama": {}, "qwen2": {}, "mistral": {"sliding_window": None},
            "gemma2": {"head_dim": 8, "query_pre_attn_scalar": 8}, "gemma3_text": {"head_dim": 8, "query_pre_attn_scalar": 8}}
K = 3
SCORERS = "sparsecbm.sparsity.scorers"


def gqa(family="llama", impl="batched", granularity="structured", n_concepts=K, dtype=torch.float32, seed=0, **kw):
    torch.manual_seed(seed)
    bb = Backbone("minilm", pooling="last", pretrained=False, config={"model_type": family, **BASE, **FAMILIES[family]})
    return SubnetworkBackbone(bb.to(dtype), n_concepts, granularity=granularity, impl=impl, **kw).eval()


def set_random_units(sb, keep=0.4, seed=1):
    g = torch.Generator().manual_seed(seed)
    for group in sb.unit_groups().values():
        m = torch.zeros(sb.state.n_masks, group.n_units, dtype=torch.bool)
        for k in range(sb.state.n_masks):
            m[k, torch.randperm(group.n_units, generator=g)[: max(1, round(keep * group.n_units))]] = True
        group.set_units(m)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_gathered_pass_equals_the_naive_passes(family):
    """float64: equal to the last float32 bit (the features are float32); float32: rounding only. Concepts
    with other query heads get other states; the attention module's own grouping is back afterwards."""
    ids, mask = batch(t=7)
    out = {}
    for dtype in (torch.float64, torch.float32):
        fast, ref = gqa(family, "batched", dtype=dtype), gqa(family, "naive", dtype=dtype)
        set_random_units(fast)
        ref.load_state_dict(fast.state_dict())
        with torch.no_grad():
            out[dtype] = fast.token_states(ids, mask), ref.token_states(ids, mask)
        attention = fast.model.layers[1].self_attn
        assert attention.num_key_value_groups == 3  # restored after the gathered pass
    a, b = out[torch.float64]
    assert (a - b).abs().max().item() == 0.0
    a, b = out[torch.float32]
    assert (a - b).abs().max().item() < 4e-6
    assert (a[0] - a[1]).abs().max() > 0.1 and (a[1] - a[2]).abs().max() > 0.1


def test_key_value_heads_follow_their_query_heads_and_pruned_heads_are_not_computed():
    sb = gqa(n_concepts=2, granularity="head", masked_layers=[-1])
    group = next(iter(sb.unit_groups().values()))
    assert (group.n_units, group.kv_groups, group.n_kv, group.unit_size) == (6, 3, 2, 8)
    layers = {n.rsplit(".", 1)[-1]: lyr for n, lyr in sb.masked_layers().items()}
    assert [n for n, lyr in layers.items() if lyr.shared_rows] == ["k_proj", "v_proj"]
    # concept 0 keeps query head 1 (group 0); concept 1 keeps heads 3 and 5 (group 1)
    group.set_units(torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1]], dtype=torch.bool))
    assert group.kv_row_mask(0).view(2, 8).all(1).tolist() == [True, False]
    assert group.kv_row_mask(1).view(2, 8).all(1).tolist() == [False, True]
    assert torch.equal(layers["k_proj"].concept_mask(1).all(1), group.kv_row_mask(1))
    assert torch.equal(layers["o_proj"].concept_mask(0).all(0), group.row_mask(0))
    with torch.no_grad():  # the weights the gathered pass multiplies: only kept heads' rows / columns
        q = [w.shape for w, _ in layers["q_proj"]._concept_weights()]
        k = [w.shape for w, _ in layers["k_proj"]._concept_weights()]
        o = [w.shape for w, _ in layers["o_proj"]._concept_weights()]
    assert q == [(16, 48), (16, 48)]  # padded to the widest concept (2 heads); concept 0's pad rows give 0
    assert k == [(8, 48), (8, 48)]  # one key/value head each, computed once
    assert o == [(48, 16), (48, 16)]
    # a pruned query head next to a kept one shares its key/value head: its (non-zero) attention output must
    # not reach the output projection, in the naive pass too
    ref = gqa(n_concepts=2, granularity="head", masked_layers=[-1], impl="naive")
    ref.load_state_dict(sb.state_dict())
    ids, mask = batch(t=7)
    with torch.no_grad():
        torch.testing.assert_close(sb.token_states(ids, mask), ref.token_states(ids, mask), atol=4e-6, rtol=0)


@pytest.fixture(scope="module")
def taylor_gqa():
    """1 GQA block, 8 query / 2 key-value heads, pruned to 0.75 with Taylor scores of each concept's own loss."""
    torch.manual_seed(0)
    cfg = {"model_type": "llama", **BASE, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 8,
           "num_key_value_heads": 2, "intermediate_size": 64}
    bb = Backbone("minilm", pooling="last", pretrained=False, config=cfg)
    sb = SubnetworkBackbone(bb, 2, granularity="structured", scorer={"_target_": f"{SCORERS}.TaylorScorer"})
    model = ConceptBottleneckModel(sb, CS2, activation="probs", dropout=0.0)
    return fit(model, 100, {step: 0.75 * step / 30 for step in (10, 20, 30)})


def test_taylor_pruning_per_query_head_meets_the_target(taylor_gqa):
    sb = taylor_gqa.backbone
    groups = sb.unit_groups()
    heads, neurons = (next(g for n, g in groups.items() if n.endswith(kind)) for kind in ("head", "neuron"))
    assert heads.mask_units.sum(1).tolist() == [2, 2] and neurons.mask_units.sum(1).tolist() == [16, 16]
    assert not torch.equal(heads.mask_units[0], heads.mask_units[1]) or not torch.equal(
        neurons.mask_units[0], neurons.mask_units[1])  # concept-specific subnetworks
    # realised sparsity of the weights: below 0.75 only by the key/value heads a kept query head keeps
    # (head_dim 4, hidden 32: q and o 32 x 32, k and v 8 x 32, FFN 3 x 64 x 32)
    total = 2 * 32 * 32 + 2 * 8 * 32 + 3 * 64 * 32
    for k, s in sb.sparsity().items():
        kept_kv = int(heads.kv_row_mask(k).view(2, 4).all(1).sum())
        kept = 2 * (2 * 4 * 32) + kept_kv * (2 * 4 * 32) + 16 * 3 * 32  # q rows + o cols, k/v rows, FFN
        assert s == pytest.approx(1 - kept / total)
        assert 0.75 - 2 * 4 * 32 * 2 / total <= s <= 0.75


def test_report_and_unit_attribution_count_query_and_key_value_heads(taylor_gqa):
    sb = taylor_gqa.backbone
    stats = subnetwork_stats(sb, CS2.names)
    heads = next(g for n, g in sb.unit_groups().items() if n.endswith("head"))
    for k, name in enumerate(CS2.names):
        per_head = stats["concepts"][name]["heads_kept"]["0"]
        assert per_head == heads.mask_units[k].float().tolist()  # 8 query heads, whole heads kept or not
        kv = stats["concepts"][name]["kv_heads_kept"]["0"]
        assert kv == heads.mask_units[k].view(2, 4).any(1).float().tolist()
    b = data(1, 3)
    for k in range(2):
        att = subnetwork_attribution(taylor_gqa, k, b["input_ids"], b["attention_mask"], top=8)["blocks"]["0"]
        assert att["heads_kept"] == 2 and att["heads_total"] == 8
        kept = set(torch.nonzero(heads.mask_units[k]).flatten().tolist())
        assert {i for i, _ in att["heads"]} <= kept  # a pruned query head scores exactly 0 (not listed)


def test_gathered_single_concept_pass_and_mask_edits(taylor_gqa):
    from sparsecbm.sparsity.mask_editing import MaskEditor

    sb = taylor_gqa.backbone
    b = data(1, 11)
    with torch.no_grad():
        plain = taylor_gqa.single_concept_logits(1, b["input_ids"], b["attention_mask"]).softmax(-1)
    editor = MaskEditor(taylor_gqa, mask_portion=0.3)
    torch.testing.assert_close(editor.concept_probs(1, b["input_ids"], b["attention_mask"]), plain,
                               atol=1e-6, rtol=0)  # only the kept units computed, same values
    grads, _ = editor.mask_gradients(1, b["input_ids"], b["attention_mask"], torch.tensor([0]))
    assert {n: tuple(g.shape) for n, g in grads.items()} == {n: (g.n_units,) for n, g in sb.unit_groups().items()}
    before = editor.snapshot(0)
    edit = editor.intervene(1, b["input_ids"], b["attention_mask"], 1 - int(b["concepts"][0, 1]), restore=False)
    assert edit.swapped > 0 and edit.sparsity_after == pytest.approx(edit.sparsity_before)
    assert all(torch.equal(before[n], m) for n, m in editor.snapshot(0).items())
    editor.reset()


def test_materialise_and_export_round_trip(taylor_gqa, tmp_path):
    sb = taylor_gqa.backbone
    masks = load_masks(export_masks(sb, CS2.names, tmp_path / "masks.safetensors"))
    for name in sb.layer_names:
        assert torch.equal(masks["a"][name], sb.concept_mask(name, 0))
        assert torch.equal(masks["b"][name], sb.concept_mask(name, 1))
    b = data(4, 7)
    with torch.no_grad():
        own = sb.concept_states(1, b["input_ids"], b["attention_mask"])
        standalone = materialize(sb, 1)
        attention = standalone.layers[0].self_attn
        assert attention.num_key_value_groups == 4 and not attention._forward_pre_hooks and not attention._forward_hooks
        got = standalone(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                         position_ids=(b["attention_mask"].cumsum(-1) - 1).clamp_min(0)).last_hidden_state
    torch.testing.assert_close(got, own, atol=1e-5, rtol=1e-5)
    assert sb.model.layers[0].self_attn._forward_pre_hooks  # the original keeps its hook


@pytest.mark.parametrize("scorer", ["MagnitudeScorer", "MovementScorer", "OBertScorer", "FisherScorer"])
def test_every_scorer_and_global_scope_on_gqa(scorer):
    """Every scorer scores query heads (key/value rows shared by their group); scope=global keeps units by
    score per weight until the weight budget is met."""
    sb = gqa(n_concepts=2, scorer={"_target_": f"{SCORERS}.{scorer}", "batches": 1}, schedule={"scope": "global"})
    model = ConceptBottleneckModel(sb, CS2, activation="probs", dropout=0.0)
    b = data(8, 1)
    pruner = Pruner(sb, concept_loss=lambda k, batch: concept_losses_of(model)(batch)[k],
                    concept_losses=concept_losses_of(model))
    if scorer == "MovementScorer":  # scores accumulate from training gradients
        sum(concept_losses_of(model)(b)).backward()
    pruner.prune(0.5, lambda: [b])
    groups = sb.unit_groups()
    cost = {n: g.weights_per_unit for n, g in groups.items()}
    head = next(n for n in groups if n.endswith("head"))
    assert cost[head] == pytest.approx(8 * (48 + 48) + 8 * 2 * 48 / 3)  # q rows, o cols, 1/3 of k and v rows
    total = sum(g.n_units * cost[n] for n, g in groups.items())
    for k in range(2):
        kept = sum(int(g.mask_units[k].sum()) * cost[n] for n, g in groups.items())
        assert 0.5 * total - max(cost.values()) <= kept <= 0.5 * total


def test_short_structured_training_on_the_tiny_gqa_decoder(cfg_factory):
    """conf/backbone/tiny_decoder.yaml (GQA, LoRA on the lower blocks) trains with sparsity=structured as
    shipped: masks at the final sparsity, per-query-head reports, LoRA adapters only outside the masks."""
    from sparsecbm.train import train

    result, objects = train(cfg_factory(["experiment=smoke", "backbone=tiny_decoder", "sparsity=structured",
                                         "sparsity.schedule.every=1", "test=false"]))
    sb = objects["module"].model.backbone
    assert sb.at_final_sparsity() and sb.blocks == [2, 3]
    assert all("lora_" not in n for n in sb.layer_names)
    assert any("layers.0.self_attn.q_proj.lora_A" in n for n, _ in sb.named_parameters())
    sub = result["subnetworks"]
    for c in sub["concepts"].values():
        assert set(c["heads_kept"]) == {"2", "3"} and all(len(v) == 4 for v in c["heads_kept"].values())
        assert all(len(v) == 2 for v in c["kv_heads_kept"].values())


def test_gradient_checkpointing_recomputes_under_the_gathered_layout():
    """A block recomputed in the backward pass regroups its attention as its forward pass did: same gradients."""
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        bb = Backbone("minilm", pooling="last", pretrained=False, gradient_checkpointing=checkpointing,
                      config={"model_type": "llama", **BASE})
        sb = SubnetworkBackbone(bb, K, granularity="structured").train()
        set_random_units(sb)
        ids, mask = batch(t=7)
        (sb(ids, mask) * torch.arange(1, K + 1).view(K, 1, 1)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in sb.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("k_proj" in n for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5)
