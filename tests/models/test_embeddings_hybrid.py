"""Concept embeddings (CEM-style) and the hybrid bottleneck's residual channel."""

from __future__ import annotations

import pytest
import torch
from testkit.hand import CS, FixedBackbone, M, module

from sparsecbm.interpret.leakage import split_report
from sparsecbm.interpret.strategies import Bottleneck, edited_inputs
from sparsecbm.models.cbm import ConceptBottleneckModel, concept_activations, mix_embeddings
from sparsecbm.models.residual import cross_correlation_penalty, residual_share


def cem(**kw) -> ConceptBottleneckModel:
    torch.manual_seed(0)
    backbone = FixedBackbone()
    backbone.hidden_size = 5
    return ConceptBottleneckModel(
        backbone, CS, activation="embedding", embedding_dim=M, dropout=0.0, **kw
    ).eval()


def test_embedding_activation_is_the_probability_weighted_mix():
    model = cem()
    out = model.bottleneck(torch.randn(3, 5))
    assert [e.shape for e in out.embeddings] == [(3, 3, M)] * 4 and out.residual is None
    acts = concept_activations(out.logits, "embedding", out.embeddings)
    assert acts.shape == (3, 4 * M) and model.block_widths == [M] * 4
    manual = (out.logits[2].softmax(-1).unsqueeze(-1) * out.embeddings[2]).sum(1)
    torch.testing.assert_close(acts[:, 2 * M : 3 * M], manual)
    with pytest.raises(ValueError, match="needs the concept embeddings"):
        concept_activations(out.logits, "embedding")


def test_embedding_intervention_replaces_exactly_the_intervened_concepts():
    model = cem()
    out = model.bottleneck(torch.randn(2, 5))
    before = concept_activations(out.logits, "embedding", out.embeddings).view(2, 4, M)
    value = [torch.nn.functional.one_hot(torch.tensor([1, 1]), 3).float()] * 4
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    after = edited_inputs(out.logits, "embedding", value, mask, embeddings=out.embeddings).view(2, 4, M)
    for b in range(2):
        for k in range(4):
            expected = out.embeddings[k][b, 1] if mask[b, k] else before[b, k]
            assert torch.equal(after[b, k], expected), (b, k)
    # through the Bottleneck (what intervene / curves use): a soft target writes the mix of the target
    bn = Bottleneck.from_model(model, out)
    soft = torch.tensor([[0.5, 0.0, 0.5]] * 2)
    written = bn.inputs([None, None, soft, None]).view(2, 4, M)
    torch.testing.assert_close(written[:, 2], mix_embeddings(soft, out.embeddings[2]))
    torch.testing.assert_close(written[:, [0, 1, 3]], before[:, [0, 1, 3]])


def test_each_concept_embeds_its_own_subnetwork_state():
    model = cem()
    feats = torch.randn(4, 2, 5)  # [K, B, H]: one pooled state per concept's subnetwork
    out = model.bottleneck(feats)
    moved = feats.clone()
    moved[1] += 3.0
    out2 = model.bottleneck(moved)
    for k in range(4):
        assert torch.equal(out.embeddings[k], out2.embeddings[k]) == (k != 1)
    single = model.concept_heads.single(1, feats[1])
    torch.testing.assert_close(single, out.logits[1])


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_training_interventions_occur_at_the_configured_rate(p):
    m = module(p=p).train()
    torch.manual_seed(1)
    n = 2000
    out = m.model.bottleneck(torch.randn(n, 8))
    truth = torch.randint(0, 3, (n, 4))
    inputs, mask = m.training_inputs(out, truth)
    assert mask.shape == (n, 4) and abs(mask.float().mean().item() - p) < 0.03
    blocks = inputs.view(n, 4, M)
    mixed = concept_activations(out.logits, "embedding", out.embeddings).view(n, 4, M)
    for k in range(4):
        true_emb = out.embeddings[k][torch.arange(n), truth[:, k]]
        torch.testing.assert_close(blocks[mask[:, k], k], true_emb[mask[:, k]])
        torch.testing.assert_close(blocks[~mask[:, k], k], mixed[~mask[:, k], k])


def test_embedding_modes():
    with pytest.raises(ValueError, match="independent .* not embedding .*train_intervention_prob"):
        module(mode="independent")
    batch = {
        "input_ids": torch.randint(1000, 2000, (4, 6)),
        "attention_mask": torch.ones(4, 6, dtype=torch.long),
        "label": torch.tensor([0, 1, 2, 4]),
        "concepts": torch.randint(0, 3, (4, 4)),
    }
    m = module(p=0.5)
    loss, parts, _ = m.training_losses(batch)
    loss.backward()
    assert set(parts) == {"task", "concept"}
    assert all(p.grad is not None for p in m.model.concept_heads.embedders.parameters())
    seq = module(mode="sequential")
    seq.in_label_phase = lambda: True
    loss, parts, _ = seq.training_losses(batch)
    loss.backward()
    assert set(parts) == {"task"} and all(p.grad is None for p in seq.model.concept_heads.parameters())



@pytest.mark.parametrize("q", [0.0, 0.4, 1.0])
def test_prototype_training_reads_each_values_batch_prototype_at_the_configured_rate(q):
    """cbm.prototype_prob: per example every concept reads its values' batch prototypes (mean embedding
    weighted by the predicted probabilities), so the label input of those examples depends on the
    predicted values only; the others read their own embeddings."""
    from sparsecbm.lit.losses import prototype_embeddings

    m = module(prototype_prob=q).train()
    torch.manual_seed(2)
    n = 1000
    out = m.model.bottleneck(torch.randn(n, 8))
    torch.manual_seed(3)
    protos = prototype_embeddings(out.embeddings, out.logits, q, training=True)
    own = concept_activations(out.logits, "embedding", out.embeddings).view(n, 4, M)
    read = concept_activations(out.logits, "embedding", protos).view(n, 4, M)
    swapped = torch.stack([~torch.isclose(read[:, k], own[:, k]).all(-1) for k in range(4)], 1)
    assert (swapped.all(1) | ~swapped.any(1)).all()  # all of an example's concepts, or none
    assert abs(swapped[:, 0].float().mean().item() - q) < 0.04
    for k in range(4):
        w = out.logits[k].softmax(-1).unsqueeze(-1)
        table = (w * out.embeddings[k]).sum(0) / w.sum(0)  # [C_k, M]
        expected = (out.logits[k].softmax(-1).unsqueeze(-1) * table).sum(1)
        torch.testing.assert_close(read[swapped[:, k], k], expected[swapped[:, k]])
    # through the module: the same draw
    torch.manual_seed(3)
    inputs, mask = m.training_inputs(out, torch.zeros(n, 4, dtype=torch.long))
    assert not mask.any()
    torch.testing.assert_close(inputs.view(n, 4, M), read)
    # evaluation and q=0 change nothing and draw no random number
    state = torch.get_rng_state()
    assert prototype_embeddings(out.embeddings, out.logits, q, training=False) is out.embeddings
    assert prototype_embeddings(out.embeddings, out.logits, 0.0, training=True) is out.embeddings
    assert torch.equal(torch.get_rng_state(), state)


def test_prototype_training_options_are_checked():
    from sparsecbm.errors import ConfigError
    from sparsecbm.models.cbm_config import CBMConfig

    with pytest.raises(ConfigError, match="prototype_prob=0.5 needs cbm.activation=embedding.*activation=hard"):
        CBMConfig(activation="hard", prototype_prob=0.5)
    with pytest.raises(ConfigError, match=r"cbm.prototype_prob=1.5 is not valid; expected a value in \[0, 1\]"):
        CBMConfig(activation="embedding", prototype_prob=1.5)
    assert CBMConfig(activation="embedding", prototype_prob=0.5).prototype_prob == 0.5

# ----------------------------------------------------------------------------------- hybrid
@pytest.mark.parametrize("residual_dim", [0, 3])
def test_label_depends_on_features_only_through_concepts_without_residual(residual_dim):
    torch.manual_seed(0)
    model = ConceptBottleneckModel(
        FixedBackbone(), CS, activation="probs", dropout=0.0, residual_dim=residual_dim
    )
    features = torch.randn(2, 3, requires_grad=True)
    out = model.bottleneck(features)
    acts = concept_activations(out.logits, "probs").detach().requires_grad_(True)  # cut the concept path
    label = model.label_from_inputs(acts, out.residual)
    (grad,) = torch.autograd.grad(label.sum(), features, allow_unused=True)
    if residual_dim == 0:
        # the only path from the features to the label is the concept activations
        assert grad is None or torch.all(grad == 0)
        assert model.residual_block is None and model.label_head.in_features == 12
    else:
        assert grad.abs().sum() > 0 and model.residual_block == slice(12, 15)
        with pytest.raises(ValueError, match="residual channel"):
            model.label_from_inputs(acts)


def test_residual_configuration_errors():
    with pytest.raises(ValueError, match="residual channel needs cbm.mode=joint or sequential"):
        ConceptBottleneckModel(FixedBackbone(), CS, mode="independent", activation="probs", residual_dim=2)
    with pytest.raises(ValueError, match="topk .* residual channel"):
        module("probs", residual_dim=2, label_sparsity="topk")


def test_cross_correlation_penalty():
    torch.manual_seed(0)
    c = torch.randn(500, 3)
    assert cross_correlation_penalty(c[:, :1], c[:, :1]) == pytest.approx(1.0, abs=1e-3)
    assert cross_correlation_penalty(100 * c[:, :1], c[:, :1]) == pytest.approx(1.0, abs=1e-3)  # scale-free
    assert cross_correlation_penalty(torch.randn(500, 2), c) < 0.01
    assert cross_correlation_penalty(c[:1], c[:1]) == 0.0


def test_residual_share_of_a_linear_head():
    torch.manual_seed(0)
    a, r = torch.randn(50, 4), torch.randn(50, 2)
    w_a, w_r = torch.randn(3, 4), torch.randn(3, 2)
    assert residual_share(lambda x, y: x @ w_a.T, a, r)["share"] == 0.0
    assert residual_share(lambda x, y: y @ w_r.T, a, r)["share"] == 1.0
    s = residual_share(lambda x, y: x @ w_a.T + y @ w_r.T, a, r)
    expected_r = ((r - r.mean(0)) @ w_r.T).abs().mean()
    assert s["residual_effect"] == pytest.approx(float(expected_r), rel=1e-5) and 0 < s["share"] < 1


def test_hybrid_penalty_in_loss_and_report():
    from testkit.hand import loader, train_ceiling

    m = module("probs", residual_dim=3, residual_penalty=2.0)
    batch = {
        "input_ids": torch.randint(1000, 2000, (6, 6)),
        "attention_mask": torch.ones(6, 6, dtype=torch.long),
        "label": torch.randint(0, 5, (6,)),
        "concepts": torch.randint(0, 3, (6, 4)),
    }
    loss, parts, _ = m.training_losses(batch)
    assert parts["residual"] > 0
    loss.backward()
    assert m.model.residual_head.proj.weight.grad.abs().sum() > 0
    report = split_report(m.eval().model, loader(8), train_ceiling())["bottleneck"]
    assert report["residual"]["dim"] == 3 and 0 <= report["residual"]["share"] <= 1
    assert set(report["residual"]["without"]) == {"acc", "f1"}
