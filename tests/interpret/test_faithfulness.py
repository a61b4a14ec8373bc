"""Faithfulness metrics on a constructed model whose important tokens are known."""

from __future__ import annotations

import torch
from torch import nn

from sparsecbm.interpret.attribution import Ablation, Shapley, Tokens
from sparsecbm.interpret.faithfulness import faithfulness

CLS, SEP, MASK, PAD = 101, 102, 103, 0
CUES = (7, 8)  # the only tokens that matter for concept 0


class BagOfCues(nn.Module):
    """Concept 0 is 'Positive' (value 1) in proportion to how many cue tokens the input contains."""

    def concept_logits(self, input_ids, attention_mask):
        cues = torch.isin(input_ids, torch.tensor(CUES)).float().mul(attention_mask).sum(-1)
        logits = torch.stack([torch.zeros_like(cues), 1.5 * cues - 1.0, torch.full_like(cues, -3.0)], -1)
        return [logits, -logits]


def make_batch(n=12, t=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    for b in range(n):
        length = t - (b % 4)
        pos = torch.randperm(length - 2, generator=g)[:3] + 1
        ids[b, pos] = torch.tensor([CUES[0], CUES[1], CUES[0]])
        ids[b, 0], ids[b, length - 1] = CLS, SEP
        ids[b, length:], mask[b, length:] = PAD, 0
    return {"input_ids": ids, "attention_mask": mask}


TOKENS = Tokens(MASK, (CLS, SEP, MASK, PAD))


def test_metrics_rank_the_true_explanation_first():
    batch = make_batch()
    truth = torch.isin(batch["input_ids"], torch.tensor(CUES)).float()
    random = torch.rand(truth.shape, generator=torch.Generator().manual_seed(1))
    model = BagOfCues()
    res = {
        name: faithfulness(model, batch, 0, s, TOKENS).summary()
        for name, s in {"true": truth + 0.01 * random, "random": random, "reversed": -truth}.items()
    }
    for q in ("5%", "10%", "20%"):
        assert res["true"][f"comp@{q}"] > res["random"][f"comp@{q}"] >= res["reversed"][f"comp@{q}"]
        assert res["true"][f"suff@{q}"] < res["random"][f"suff@{q}"]
        assert res["true"][f"suff@{q}"] < res["reversed"][f"suff@{q}"]
    assert res["true"]["deletion_auc"] < res["random"]["deletion_auc"] < res["reversed"]["deletion_auc"]
    assert res["true"]["n"] == 12


def test_special_tokens_are_never_removed():
    batch = make_batch(n=2)
    specials_first = torch.isin(batch["input_ids"], torch.tensor([CLS, SEP])).float() * 100
    # a scoring that ranks [CLS]/[SEP] first is scored exactly like one that ranks them last
    base = torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(2))
    a = faithfulness(BagOfCues(), batch, 0, base + specials_first, TOKENS).summary()
    b = faithfulness(BagOfCues(), batch, 0, base - specials_first, TOKENS).summary()
    assert a == b


def test_captum_perturbation_methods_find_the_cues():
    batch = make_batch(n=4)
    truth = torch.isin(batch["input_ids"], torch.tensor(CUES))
    for method in (Ablation(TOKENS), Shapley(TOKENS, shapley_samples=2)):
        scores = method.attribute(BagOfCues(), batch, 0)
        assert scores.shape == batch["input_ids"].shape
        top3 = scores.topk(3, dim=1).indices
        assert torch.all(truth.gather(1, top3)), method.name
        special = ~TOKENS.candidates(batch["input_ids"], batch["attention_mask"])
        assert torch.all(scores[special] == 0)
