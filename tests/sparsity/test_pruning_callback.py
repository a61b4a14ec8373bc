"""The pruning callback scores with the loss the model trains on: class-weighted when the concept loss is.

``cbm=cem`` trains every concept with class-balanced weights that the module sets in ``on_fit_start``,
after the callback's ``setup``; a scorer that captured the weights in ``setup`` scored with the unweighted
placeholders. These tests look at the losses the scorers receive at every mask update of a real fit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from testkit import TINY_BERT

from sparsecbm.callbacks.pruning import PruningCallback
from sparsecbm.train import train

SMOKE = ["experiment=smoke", "trainer.max_epochs=2", *TINY_BERT]


@pytest.fixture
def seen(monkeypatch):
    """At every mask update of a fit: the losses the pruner hands the scorers, the class-weighted and the
    unweighted cross-entropies of the same batch from the module, and the module's weights."""
    records = []
    original = PruningCallback.on_train_batch_start

    def spy(self, trainer, pl_module, batch, batch_idx):
        target = self.pruner.schedule.target(trainer.global_step, self.window)
        if target is not None and abs(target - float(pl_module.model.backbone.mask_level)) > 1e-9:
            was = pl_module.training
            pl_module.eval()  # no dropout: the same logits for every computation below
            with torch.no_grad():
                ctx = self.pruner.context(None)
                got = [float(v) for v in ctx.concept_losses(batch)]
                got_single = [float(ctx.concept_loss(k, batch)) for k in range(len(got))]
                logits = pl_module.model.concept_logits(batch["input_ids"], batch["attention_mask"])
                y = batch["concepts"]
                weights = list(pl_module.concept_weights)
                weighted = [float(F.cross_entropy(lg, y[:, k], weight=weights[k])) for k, lg in enumerate(logits)]
                plain = [float(F.cross_entropy(lg, y[:, k])) for k, lg in enumerate(logits)]
            pl_module.train(was)
            records.append({"got": got, "single": got_single, "weighted": weighted, "plain": plain,
                            "weights": weights})
        return original(self, trainer, pl_module, batch, batch_idx)

    monkeypatch.setattr(PruningCallback, "on_train_batch_start", spy)
    return records


def test_scorers_read_the_class_balanced_loss_the_model_trains_on(cfg_factory, seen):
    train(cfg_factory([*SMOKE, "sparsity=structured", "sparsity.schedule.final_sparsity=0.5",
                       "sparsity.scorer.batches=1", "sparsity.schedule.every=2"]))
    assert len(seen) >= 2  # several mask updates inside the fit
    for r in seen:
        assert all(w is not None for w in r["weights"])  # cbm=cem: class-balanced concept loss
        assert not all(torch.allclose(w, w[0].expand_as(w)) for w in r["weights"])  # and the classes differ
        assert r["got"] == pytest.approx(r["weighted"], rel=1e-5, abs=1e-6)  # taylor / fisher
        assert r["single"] == pytest.approx(r["weighted"], rel=1e-4, abs=1e-5)  # obert's one-concept passes
    # on this data the weighting changes the losses, so the unweighted placeholders could not pass
    assert any(abs(a - b) > 1e-3 for r in seen for a, b in zip(r["got"], r["plain"]))


def test_unweighted_concept_loss_is_scored_unweighted(cfg_factory, seen):
    train(cfg_factory([*SMOKE, "cbm=joint", "sparsity=structured", "sparsity.schedule.final_sparsity=0.5",
                       "sparsity.scorer.batches=1", "sparsity.schedule.every=2"]))
    assert seen and all(w is None for r in seen for w in r["weights"])
    for r in seen:
        assert r["got"] == pytest.approx(r["plain"], rel=1e-5, abs=1e-6)


def test_metrics_csv_has_train_sparsity_only_at_mask_updates(cfg_factory, tmp_path):
    import csv

    _, objs = train(cfg_factory([*SMOKE, "sparsity=structured", "sparsity.schedule.final_sparsity=0.5",
                                 "sparsity.scorer.batches=1", "sparsity.schedule.every=4"]))
    cb = next(c for c in objs["trainer"].callbacks if isinstance(c, PruningCallback))
    assert len(cb.updates) >= 2
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    logged = [(int(r["step"]), float(r["train/sparsity"])) for r in rows if r.get("train/sparsity")]
    assert logged == [(s, pytest.approx(v)) for s, v in cb.updates]
