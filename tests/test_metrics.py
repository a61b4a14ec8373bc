import pytest
import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.lit.metrics import CBMMetrics


def test_hand_computed():
    cs = ConceptSet.from_config([{"name": "a"}, {"name": "b"}], {"column": "y", "values": ["0", "1", "2"]},
                                values=["neg", "pos", "unk"])
    m = CBMMetrics(cs)
    labels = torch.tensor([0, 1, 2, 2])
    label_pred = torch.tensor([0, 1, 1, 2])  # 3/4 right
    concepts = torch.tensor([[0, 1], [1, 1], [2, 0], [2, 2]])
    a_pred, b_pred = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])  # a: 3/4, b: 4/4
    onehot = lambda p, n=3: torch.nn.functional.one_hot(p, n).float()  # noqa: E731
    m.update(onehot(label_pred[:2]), labels[:2], [onehot(a_pred[:2]), onehot(b_pred[:2])], concepts[:2])
    m.update(onehot(label_pred[2:]), labels[2:], [onehot(a_pred[2:]), onehot(b_pred[2:])], concepts[2:])
    out = m.compute("test")
    assert out["test/label/acc"] == pytest.approx(0.75)
    # label macro-F1: class0 F1=1, class1 P=1/2 R=1 -> 2/3, class2 P=1 R=1/2 -> 2/3
    assert out["test/label/f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # concept a: class0 P=1/2 R=1 -> 2/3; class1 1; class2 P=1 R=1/2 -> 2/3
    assert out["test/concept/a/acc"] == pytest.approx(0.75)
    assert out["test/concept/a/f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert out["test/concept/b/acc"] == 1.0 and out["test/concept/b/f1"] == pytest.approx(1.0)
    assert out["test/concept/acc"] == pytest.approx(7 / 8)
    assert out["test/concept/f1"] == pytest.approx(((2 / 3 + 1 + 2 / 3) / 3 + 1) / 2)
    m.reset()
    m.update(onehot(torch.tensor([2])), torch.tensor([2]), [onehot(torch.tensor([0]))] * 2, torch.tensor([[0, 0]]))
    assert m.compute("x")["x/label/acc"] == 1.0
