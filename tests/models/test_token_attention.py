"""Per-concept attention pooling: mean pooling at init, padding, learning a known token, training, explain."""

from __future__ import annotations

import pytest
import torch
from testkit import TINY_BERT

from sparsecbm.models.backbone import pool
from sparsecbm.models.cbm_config import CBMConfig
from sparsecbm.models.token_attention import ConceptAttentionPooler


def test_untrained_pooler_is_mean_pooling_for_shared_and_per_concept_states():
    torch.manual_seed(0)
    pooler = ConceptAttentionPooler(hidden=8, n_concepts=3)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    shared = torch.randn(2, 6, 8)
    features, extras = pooler(shared, mask)
    assert features.shape == (3, 2, 8) and extras["attention"].shape == (3, 2, 6)
    torch.testing.assert_close(features, pool(shared, mask, "mean").expand(3, 2, 8))
    per_concept = torch.randn(3, 2, 6, 8)
    features, _ = pooler(per_concept, mask)
    torch.testing.assert_close(features, pool(per_concept, mask, "mean"))


def test_weights_are_a_distribution_over_real_tokens():
    torch.manual_seed(0)
    pooler = ConceptAttentionPooler(hidden=8, n_concepts=2)
    with torch.no_grad():
        pooler.query.normal_(0, 3.0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])  # last row: an empty text
    _, extras = pooler(torch.randn(3, 5, 8), mask)
    w = extras["attention"]
    assert torch.all(w[:, 0, 3:] == 0)  # padding gets exactly zero weight
    torch.testing.assert_close(w[:, :2].sum(-1), torch.ones(2, 2))
    assert torch.all(w[:, 2] == 0) and not torch.isnan(w).any()  # no real token: zeros, not NaN
    assert torch.isinf(extras["scores"][:, 0, 3:]).all()


def _fit(pooler, states, mask, targets, steps=300):
    """Train ``pooler`` (if its queries require grad) and one linear head per concept; train accuracy."""
    torch.manual_seed(1)
    heads = torch.nn.ModuleList(torch.nn.Linear(states.shape[-1], 2) for _ in targets)
    params = [*heads.parameters(), *(p for p in pooler.parameters() if p.requires_grad)]
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(steps):
        features, _ = pooler(states, mask)
        loss = sum(torch.nn.functional.cross_entropy(heads[k](features[k]), y) for k, y in enumerate(targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        features, extras = pooler(states, mask)
        return [
            float((heads[k](features[k]).argmax(-1) == y).float().mean()) for k, y in enumerate(targets)
        ], extras


def test_each_concept_learns_to_attend_to_its_own_token():
    """Concept 0 is the value (dim 2) of the token marked on dim 0, concept 1 the value (dim 3) of the
    token marked on dim 1; every other token carries random values, so mean pooling cannot tell them.
    Trained attention reads each concept's own token (weight far above the uniform 1/6) and solves
    the task; the same heads on mean pooling (queries frozen at zero) stay near chance."""
    torch.manual_seed(0)
    n, t, h = 256, 6, 8
    states = torch.randn(n, t, h) * 0.1
    states[..., 2:4] = torch.randint(0, 2, (n, t, 2)).float() * 2 - 1  # distractors: random values everywhere
    pos0, pos1 = torch.randint(0, t, (n,)), torch.randint(0, t, (n,))
    pos1 = torch.where(pos1 == pos0, (pos0 + 1) % t, pos1)
    y0, y1 = torch.randint(0, 2, (n,)), torch.randint(0, 2, (n,))
    rows = torch.arange(n)
    states[rows, pos0, 0] = 3.0  # marker of concept 0's token
    states[rows, pos0, 2] = y0.float() * 2 - 1  # its value
    states[rows, pos1, 1] = 3.0
    states[rows, pos1, 3] = y1.float() * 2 - 1
    mask = torch.ones(n, t, dtype=torch.long)
    acc, extras = _fit(ConceptAttentionPooler(hidden=h, n_concepts=2), states, mask, (y0, y1))
    assert min(acc) > 0.97
    w = extras["attention"]
    assert w[0, rows, pos0].mean() > 0.5 and w[1, rows, pos1].mean() > 0.5
    mean_pooling = ConceptAttentionPooler(hidden=h, n_concepts=2).requires_grad_(False)
    acc_mean, _ = _fit(mean_pooling, states, mask, (y0, y1))
    assert max(acc_mean) < 0.8


def test_config_builds_attention_and_refuses_standard():
    assert isinstance(CBMConfig.coerce({"tokens": "attention"}).token_pooler(8, 4), ConceptAttentionPooler)
    with pytest.raises(ValueError, match="cbm.tokens=attention needs concepts"):
        CBMConfig.coerce({"tokens": "attention", "mode": "standard"}).token_pooler(8, 4)
    with pytest.raises(ValueError, match="cbm.tokens='heads' is not valid"):
        CBMConfig.coerce({"tokens": "heads"}).token_pooler(8, 4)


def test_train_reload_and_explain_with_attention(cfg_factory, tmp_path):
    import sparsecbm
    from sparsecbm.interpret.attribution import Tokens, get_method, resolve_name
    from sparsecbm.interpret.explainer import explain_batch
    from sparsecbm.train import train

    results, objs = train(cfg_factory(["experiment=smoke", "cbm=cem", "cbm.tokens=attention", *TINY_BERT]))
    assert "tokens_kept" not in results["test"]  # a gates-only statistic
    trained = objs["module"].model.token_pooler
    assert trained.query.abs().sum() > 0  # the queries trained (they start at zero)
    session = sparsecbm.load(tmp_path / "checkpoints" / "best.ckpt")
    module = session.model
    assert torch.equal(module.token_pooler.query, trained.query)
    batch = next(iter(objs["datamodule"].loader("test")))
    assert resolve_name("ours", module) == "lig"  # attention weights were less faithful than LIG on CEBaB
    tokenizer = objs["datamodule"].tokenizer
    with pytest.raises(ValueError, match="method=gates needs a model trained with cbm.tokens=gates"):
        get_method("gates", Tokens.from_tokenizer(tokenizer)).attribute(module, batch, 0)
    explanations = explain_batch(session, batch, method="attention")
    with torch.no_grad():
        weights = module(batch["input_ids"], batch["attention_mask"]).pooler["attention"]
    first = explanations[0].concepts[1]
    real = batch["attention_mask"][0].bool()
    torch.testing.assert_close(torch.tensor(first.gates), weights[1, 0, real])  # what the concept read
    # the attribution scores are the same weights, zeroed on [CLS]/[SEP] like every method's
    special = torch.isin(batch["input_ids"][0, real], torch.tensor(tokenizer.all_special_ids))
    expected = torch.where(special, torch.zeros(()), weights[1, 0, real])
    torch.testing.assert_close(torch.tensor(first.token_scores), expected, atol=1e-6, rtol=0)
