"""models/bottleneck.py: every activation kind reads what the model produces and writes a set value."""

import pytest
import torch

from sparsecbm.models.bottleneck import (
    ACTIVATIONS,
    LOGIT_EPS,
    activation,
    edited_inputs,
    ground_truth_targets,
    mix_embeddings,
)

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
EMB = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)


def test_kinds_are_the_four_activations():
    assert ACTIVATIONS == ("logits", "probs", "hard", "embedding")
    with pytest.raises(ValueError, match="unknown concept activation 'soft'"):
        activation("soft")


def test_read_of_each_kind():
    torch.testing.assert_close(activation("logits").read(LOGITS), LOGITS)
    torch.testing.assert_close(activation("probs").read(LOGITS), LOGITS.softmax(-1))
    assert activation("hard").read(LOGITS).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    torch.testing.assert_close(activation("embedding").read(LOGITS, EMB), mix_embeddings(LOGITS.softmax(-1), EMB))
    with pytest.raises(ValueError, match="needs the concept embeddings"):
        activation("embedding").read(LOGITS)


def test_hard_read_passes_the_softmax_gradient():
    lg = LOGITS.clone().requires_grad_(True)
    (activation("hard").read(lg) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert lg.grad is not None and lg.grad.abs().sum() > 0


def test_write_sets_the_target_in_each_space():
    q = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    written = activation("logits").write(q, LOGITS)
    torch.testing.assert_close(written.softmax(-1), (1 - LOGIT_EPS) * q + LOGIT_EPS / 3)
    torch.testing.assert_close(written.mean(-1), LOGITS.mean(-1))  # the offset the head saw is kept
    torch.testing.assert_close(activation("probs").write(q, LOGITS), q)
    assert activation("hard").write(q, LOGITS).tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    torch.testing.assert_close(activation("embedding").write(q, LOGITS, EMB), mix_embeddings(q, EMB))


def test_strategies_and_edited_inputs():
    hard = ground_truth_targets(torch.tensor([[2], [2]]), [3])[0]  # a hard value is the one-hot of its index
    assert hard.tolist() == [[0.0, 0.0, 1.0]] * 2
    gt = ground_truth_targets(torch.tensor([[1, 0], [2, 1]]), [3, 2])
    assert [t.tolist() for t in gt] == [[[0, 1, 0], [0, 0, 1]], [[1, 0], [0, 1]]]
    two = [LOGITS, LOGITS[:, :2]]
    mask = torch.tensor([[True, False], [False, False]])
    out = edited_inputs(two, "probs", [hard, None], mask)
    assert out[0, :3].tolist() == [0.0, 0.0, 1.0]  # example 0, concept 0 edited
    torch.testing.assert_close(out[1, :3], LOGITS[1].softmax(-1))  # example 1 untouched
    torch.testing.assert_close(out[:, 3:], LOGITS[:, :2].softmax(-1))  # concept 1 untouched
