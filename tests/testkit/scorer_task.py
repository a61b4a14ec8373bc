"""The constructed two-concept task of tests/sparsity/test_scorers.py (concept ``a``: token 5 occurs; ``b``: token 6
occurs; a 1-block BERT read at CLS) and its training loop with prune points."""

from __future__ import annotations

import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.sparsity import Pruner
from sparsecbm.sparsity.pruning import concept_losses_of

CFG = {"model_type": "bert", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 8,
       "intermediate_size": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
CS2 = ConceptSet.from_config([{"name": "a"}, {"name": "b"}], {"column": "y", "values": ["0", "1"]}, values=["no", "yes"])
TOKEN = {"a": 5, "b": 6}


def data(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 64, (n, 10), generator=g)
    ids[:, 0] = 2  # CLS
    for tok in TOKEN.values():
        has = torch.randint(0, 2, (n,), generator=g).bool()
        pos = torch.randint(1, 10, (n,), generator=g)
        ids[has, pos[has]] = tok
    concepts = torch.stack([(ids == t).any(1).long() for t in TOKEN.values()], 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "concepts": concepts, "label": concepts[:, 0]}


def fit(model, steps: int, prune_at: dict[int, float] | None = None, seed: int = 0):
    """``steps`` Adam steps on both concepts; at step ``s`` in ``prune_at`` the masks go to ``prune_at[s]``."""
    losses = concept_losses_of(model)
    pruner = Pruner(model.backbone, concept_losses=losses, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train, score = [data(32, 100 + i) for i in range(20)], [data(32, 500 + i) for i in range(2)]
    for step in range(steps):
        if step in (prune_at or {}):
            model.eval()
            pruner.prune(prune_at[step], lambda: score)
            model.train()
        loss = sum(losses(train[step % len(train)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
