import pytest
import torch
from testkit.hand import FixedBackbone

from sparsecbm.concepts import ConceptSet
from sparsecbm.models.cbm import ConceptBottleneckModel, concept_activations, one_hot_concepts

CS = ConceptSet.from_config([{"name": "a"}, {"name": "b", "values": ["x", "y"]}], {"column": "y", "values": ["0", "1"]},
                            values=["neg", "pos", "unk"])


def test_activations():
    logits = [torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    assert concept_activations(logits, "logits").tolist() == [[2.0, 0.0, 0.0, 0.0, 1.0]]
    probs = concept_activations(logits, "probs")
    torch.testing.assert_close(probs[0, :3].sum(), torch.tensor(1.0))
    hard_in = [lg.clone().requires_grad_(True) for lg in logits]
    hard = concept_activations(hard_in, "hard")
    assert hard.tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0]]
    hard[0, 1].backward()  # straight-through: gradient flows to the logits
    assert hard_in[0].grad.abs().sum() > 0
    assert one_hot_concepts(torch.tensor([[2, 0]]), [3, 2]).tolist() == [[0, 0, 1, 1, 0]]


def test_label_reads_concepts_only():
    torch.manual_seed(0)
    m = ConceptBottleneckModel(FixedBackbone(), CS, mode="joint", activation="probs", dropout=0.0).eval()
    ids = torch.tensor([[1, 2, 3]])
    out = m(ids, torch.ones_like(ids))
    assert [c.shape for c in out.concept_logits] == [(1, 3), (1, 2)] and out.label_logits.shape == (1, 2)
    # the label is a function of the concept activations alone
    again, _ = m.label_from_concepts(out.concept_logits)
    torch.testing.assert_close(again, out.label_logits)
    # per-concept features [K, B, H]: concept k reads only slice k
    feats = torch.stack([torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[9.0, 9.0, 9.0]])])
    per = m.concept_heads(feats)
    torch.testing.assert_close(per[0], out.concept_logits[0])
    assert not torch.allclose(per[1], out.concept_logits[1])


def test_mode_errors():
    with pytest.raises(ValueError, match="independent .* must read cbm.activation=probs or hard"):
        ConceptBottleneckModel(FixedBackbone(), CS, mode="independent", activation="logits")
    with pytest.raises(ValueError, match="cbm.mode='joined' is not valid"):
        ConceptBottleneckModel(FixedBackbone(), CS, mode="joined")
    std = ConceptBottleneckModel(FixedBackbone(), CS, mode="standard")
    assert not std.has_concepts and std(torch.ones(2, 3, dtype=torch.long), None).concept_logits == []
