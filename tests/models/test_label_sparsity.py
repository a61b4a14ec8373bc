"""Sparse concept->label layer: exact top-k per label (also after training and reload), L1 penalty, contributions."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from testkit import TINY_BERT

from sparsecbm.interpret.explainer import concept_contributions, label_layer_summary
from sparsecbm.models.label_sparsity import TopKConceptLinear, make_sparse_label_head


def test_topk_mask_is_exact_and_straight_through():
    torch.manual_seed(0)
    head = TopKConceptLinear([3, 3, 2], n_out=4, k=2)
    mask = head.mask()
    assert mask.shape == (4, 8)
    blocks = torch.stack([mask[:, 0:3].amax(1), mask[:, 3:6].amax(1), mask[:, 6:8].amax(1)], 1)
    assert torch.all(blocks.sum(1) == 2)  # exactly k concepts per label, whole value blocks
    x = torch.randn(5, 8)
    assert torch.allclose(head(x), x @ (head.weight * mask).T + head.bias)
    head(x).sum().backward()
    assert torch.all(head.weight.grad[mask == 0] != 0)  # pruned weights still get gradients


def test_bad_configs():
    with pytest.raises(ValueError, match="label_topk"):
        TopKConceptLinear([3, 3], 2, k=3)
    with pytest.raises(ValueError, match="label_sparsity"):
        make_sparse_label_head(torch.nn.Linear(6, 2), "dense", [3, 3])
    with pytest.raises(ValueError, match="label_head=linear"):
        make_sparse_label_head(torch.nn.Sequential(), "topk", [3, 3])


def test_topk_holds_after_training_and_contributions_sum_to_logit(cfg_factory, tmp_path):
    from sparsecbm.checkpoint import load_model
    from sparsecbm.train import train

    _, objs = train(
        cfg_factory(["experiment=smoke", "cbm.label_sparsity=topk", "cbm.label_topk=1", *TINY_BERT])
    )
    model, _ = load_model(tmp_path / "checkpoints" / "best.ckpt")
    assert isinstance(model.label_head, TopKConceptLinear)
    summary = label_layer_summary(model)
    assert set(summary) == {"1", "2", "3", "4", "5"}
    assert all(len(used) == 1 for used in summary.values())  # each label reads exactly one concept
    batch = next(iter(objs["datamodule"].loader("test")))
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
        pred = out.label_logits.argmax(-1)
        contrib = concept_contributions(model, out.outputs, pred)
    logit = out.label_logits.gather(1, pred[:, None]).squeeze(1)
    assert torch.allclose(contrib.sum(-1) + model.label_head.bias[pred], logit, atol=1e-5)
    unused = [
        [c.name not in {u.concept for u in summary[str(int(p) + 1)]} for c in model.concepts]
        for p in pred
    ]
    assert torch.all(contrib[torch.tensor(unused)] == 0)  # concepts a label does not read contribute nothing


def test_l1_penalty_in_loss(cfg_factory, tmp_path):
    from sparsecbm.train import train

    train(cfg_factory(["experiment=smoke", "cbm.label_sparsity=l1", "cbm.label_l1=0.01", *TINY_BERT]))
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert metrics["train/loss_label_l1"].dropna().gt(0).all()
