"""Per-concept hard-concrete token gates: shapes, padding, budget, training and checkpoint round trip."""

from __future__ import annotations

import pandas as pd
import torch
from testkit import TINY_BERT

from sparsecbm.models.cbm_config import CBMConfig
from sparsecbm.models.token_gates import HardConcreteTokenGates


def test_shapes_padding_and_per_concept_states():
    torch.manual_seed(0)
    gates = HardConcreteTokenGates(hidden=8, n_concepts=3, budget=0.3)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    for states in (torch.randn(2, 6, 8), torch.randn(3, 2, 6, 8)):  # shared and per-concept backbones
        for train in (True, False):
            gates.train(train)
            features, extras = gates(states, mask)
            assert features.shape == (3, 2, 8)
            assert extras["gates"].shape == extras["log_alpha"].shape == (3, 2, 6)
            assert torch.all(extras["gates"][:, 0, 4:] == 0)  # padding is never selected
            assert torch.all((extras["gates"] >= 0) & (extras["gates"] <= 1))
    gates.eval()
    a, _ = gates(states, mask)
    b, _ = gates(states, mask)
    assert torch.equal(a, b)  # deterministic gates at inference


def test_gates_reach_target_budget():
    """The budget penalty alone drives the kept fraction (at inference) to the target."""
    torch.manual_seed(0)
    states = torch.randn(16, 20, 8)
    mask = torch.ones(16, 20, dtype=torch.long)
    mask[8:, 15:] = 0
    gates = HardConcreteTokenGates(hidden=8, n_concepts=2, budget=0.25, penalty=1.0)
    opt = torch.optim.Adam(gates.parameters(), lr=0.05)
    gates.train()
    for _ in range(300):
        _, extras = gates(states, mask)
        loss = gates.penalty(extras, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gates.eval()
    _, extras = gates(states, mask)
    expected = gates.expected_fraction(extras, mask).mean().item()
    kept = gates.kept_fraction(extras, mask).mean().item()
    assert abs(expected - 0.25) < 0.03, expected
    assert abs(kept - 0.25) < 0.1, kept


def test_config_builds_none_or_gates():
    assert CBMConfig.coerce({"tokens": "none"}).token_pooler(8, 4) is None
    pooler = CBMConfig.coerce({"tokens": "gates", "token_budget": 0.1}).token_pooler(8, 4)
    assert isinstance(pooler, HardConcreteTokenGates) and pooler.budget == 0.1


def test_train_with_gates_and_reload(cfg_factory, tmp_path):
    from sparsecbm.checkpoint import load_model
    from sparsecbm.train import train

    cfg = cfg_factory(
        ["experiment=smoke", "trainer.max_epochs=2", "cbm.tokens=gates", "cbm.token_budget=0.3", *TINY_BERT]
    )
    results, objs = train(cfg)
    # results.json: the fraction of real tokens each concept reads on test, from the best checkpoint's gates
    best, _ = load_model(results["run"]["best_checkpoint"])
    kept = []
    with torch.no_grad():
        for b in objs["datamodule"].loader("test"):
            extras = best(b["input_ids"], b["attention_mask"]).pooler
            kept.append(best.token_pooler.kept_fraction(extras, b["attention_mask"]))
    kept = torch.cat(kept, 1).mean(1)
    reported = results["test"]["tokens_kept"]
    assert list(reported) == ["food", "ambiance", "service", "noise"]
    assert [round(v, 5) for v in reported.values()] == [round(float(v), 5) for v in kept]
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    budget = metrics["train/loss_token_budget"].dropna()
    assert len(budget) > 0 and budget.iloc[-1] < budget.iloc[0]  # the penalty is in the loss and decreases
    module, _ = load_model(tmp_path / "checkpoints" / "best.ckpt")
    assert (
        isinstance(module.token_pooler, HardConcreteTokenGates)
        and module.token_pooler.budget == 0.3
    )
    trained = objs["module"].model.token_pooler
    assert torch.equal(module.token_pooler.weight, trained.weight)
    batch = next(iter(objs["datamodule"].loader("test")))
    out = module(batch["input_ids"], batch["attention_mask"])
    assert out.pooler["gates"].shape[:2] == (4, batch["input_ids"].shape[0])
    assert out.label_logits.shape == (batch["input_ids"].shape[0], 5)


def test_init_from_a_dense_checkpoint_adds_fresh_gates(cfg_factory, tmp_path):
    from sparsecbm.train import build, train

    train(cfg_factory(["experiment=smoke", "cbm.tokens=none", *TINY_BERT], out=tmp_path / "dense"))  # mean pooling
    dense = torch.load(tmp_path / "dense/checkpoints/best.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    init = f"init_from={tmp_path / 'dense/checkpoints/best.ckpt'}"
    _, module, _ = build(
        cfg_factory(["experiment=smoke", "cbm.tokens=gates", init, *TINY_BERT], out=tmp_path / "g")
    )
    state = module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in dense.items())
    assert "model.token_pooler.weight" in state and "model.token_pooler.weight" not in dense


def test_gates_in_sequential_mode_and_not_in_standard(cfg_factory, tmp_path):
    import pytest

    from sparsecbm.train import train

    extra = ["cbm=sequential", "trainer.max_epochs=2", "cbm.label_epochs=1", "cbm.tokens=gates", *TINY_BERT]
    results, objs = train(cfg_factory(["experiment=smoke", *extra]))
    assert not objs["module"].model.token_pooler.weight.requires_grad  # frozen with X->C in the label phase
    with pytest.raises(ValueError, match="standard"):
        train(
            cfg_factory(
                ["experiment=smoke", "cbm=standard", "cbm.tokens=gates", *TINY_BERT], out=tmp_path / "s"
            )
        )
