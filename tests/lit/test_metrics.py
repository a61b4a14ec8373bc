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


def test_one_definition_when_a_class_is_absent():
    """5 classes, two of them in neither the labels nor the predictions: torchmetrics' macro-F1 averages the
    3 present classes (sklearn with all labels would count the absent ones as 0)."""
    from sklearn.metrics import f1_score

    from sparsecbm.lit.metrics import classification_scores

    labels, preds = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 1, 2, 0])
    s = classification_scores(preds, labels, 5)
    present = f1_score(labels, preds, average="macro")  # over the classes that occur: the same number
    assert s["f1"] == pytest.approx(present) and s["acc"] == pytest.approx(4 / 6)
    assert f1_score(labels, preds, average="macro", labels=list(range(5))) == pytest.approx(present * 3 / 5)


def test_papers_macro_f1_is_the_one_vs_rest_average_of_both_sides():
    """The SparseCBM / C3M code: for each class c, sklearn's binary macro-F1 of (y == c) vs (pred == c)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from sparsecbm.lit.metrics import classification_scores

    rng = np.random.default_rng(0)
    for _ in range(20):
        labels, preds = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        theirs = np.mean([f1_score(labels == c, preds == c, average="macro") for c in range(4)])
        assert classification_scores(preds, labels, 4)["f1_papers"] == pytest.approx(theirs, abs=1e-6)
    # by hand, labels [0, 0, 1, 1], predictions [0, 1, 1, 1]: class 0 -> F1(0) = 2/3, F1(rest) = 4/5;
    # class 1 -> F1(1) = 4/5, F1(rest) = 2/3; the papers' figure 11/15 against the standard macro-F1 11/15 too,
    # while a third, absent class counts as F1(rest) = 1 for them (3 classes: (22/15 + 1) / 3)
    s = classification_scores(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), 3)
    assert s["f1"] == pytest.approx(11 / 15) and s["f1_papers"] == pytest.approx((11 / 15 * 2 + 1) / 3)


def test_metrics_log_the_papers_definition_too():
    cs = ConceptSet.from_config([{"name": "a"}, {"name": "b"}], {"column": "y", "values": ["0", "1"]},
                                values=["neg", "pos", "unk"])
    m = CBMMetrics(cs)
    onehot = lambda p, n: torch.nn.functional.one_hot(p, n).float()  # noqa: E731
    y, yp = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0])
    c = torch.tensor([[0, 1], [1, 2], [2, 2], [0, 0]])
    ap, bp = torch.tensor([0, 1, 1, 0]), torch.tensor([1, 2, 2, 1])
    m.update(onehot(yp, 2), y, [onehot(ap, 3), onehot(bp, 3)], c)
    out = m.compute("val")
    from sparsecbm.lit.metrics import classification_scores

    assert out["val/label/f1_papers"] == pytest.approx(classification_scores(yp, y, 2)["f1_papers"])
    pooled = classification_scores(torch.cat([ap, bp]), torch.cat([c[:, 0], c[:, 1]]), 3)["f1_papers"]
    assert out["val/concept/f1_papers"] == pytest.approx(pooled)  # every concept's predictions pooled
