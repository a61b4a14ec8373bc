"""The four training modes of a CBM (``cbm.mode``), one small object each: its losses, its phases and its
fit hooks. :class:`~sparsecbm.lit.CBMLitModule` calls them from its Lightning hooks.

- ``standard``: no bottleneck, pooled features -> label (task loss).
- ``joint``: task loss + ``concept_loss_weight`` x concept loss, the label read from the concepts.
- ``sequential``: X->C on the concept loss for ``max_epochs - label_epochs`` epochs, then X->C frozen and
  C->Y trained on the predicted concepts.
- ``independent``: C->Y fitted to convergence on the one-hot TRUE training concepts at fit start (L-BFGS)
  and frozen; X->C trains on the concept loss alone.

A new mode is a subclass of :class:`TrainingMode` added to :data:`MODE_CLASSES` (and its name to
:data:`sparsecbm.models.cbm.MODES`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecbm.models.cbm import MODES, CBMOutput, one_hot_concepts
from sparsecbm.models.cbm_config import CBMConfig

PHASE_GROUPS = ("backbone", "concept_heads", "label_head", "residual")  # optimizer parameter groups


class TrainingMode:
    """What a mode decides. ``module`` is the :class:`~sparsecbm.lit.CBMLitModule` being trained."""

    name = ""

    def __init__(self, cfg: CBMConfig):
        self.cfg = cfg

    def on_fit_start(self, module) -> None:
        """Checks and fits that need the trainer and the data (after the class weights are set)."""

    def on_train_epoch_start(self, module) -> None:
        """Freezing or unfreezing at an epoch boundary."""

    def in_label_phase(self, module) -> bool:
        """Whether C->Y alone trains now (sequential mode's last epochs)."""
        return False

    def label_head_trained(self, module) -> bool:
        """False while the label head has not trained yet (such epochs never become the best checkpoint)."""
        return True

    def lr_phases(self, module, total_steps: int) -> dict[str, list[tuple[int, int]]]:
        """Per optimizer parameter group the ``[start, end)`` step ranges it trains in."""
        return {name: [(0, total_steps)] for name in PHASE_GROUPS}

    def losses(self, module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], CBMOutput]:
        """(total loss, its parts, the :class:`~sparsecbm.models.cbm.CBMOutput` the training metrics read)."""
        raise NotImplementedError


class Standard(TrainingMode):
    """The black-box baseline: the task loss alone."""

    name = "standard"

    def losses(self, module, batch):
        out = module.model(batch["input_ids"], batch["attention_mask"])
        task = module.task_loss(out.label_logits, batch["label"], batch.get("index"))
        return task, {"task": task}, out


class Joint(TrainingMode):
    """Task loss + ``concept_loss_weight`` x concept loss (+ the residual penalty of a hybrid bottleneck)."""

    name = "joint"

    def losses(self, module, batch):
        out = module.model(batch["input_ids"], batch["attention_mask"])
        closs = module.concept_loss(out.concept_logits, batch["concepts"])
        parts = {**module.residual_penalties(out.outputs), **module.counterfactual_penalties(batch, out.outputs)}
        label_logits = module.label_logits_for_training(out.outputs, batch["concepts"])
        task = module.task_loss(label_logits, batch["label"], batch.get("index"))
        total = task + self.cfg.concept_loss_weight * closs + sum(parts.values())
        return total, {"concept": closs, "task": task, **parts}, out


class Sequential(TrainingMode):
    """X->C first (concept loss), then C->Y on the frozen X->C's predicted concepts for ``label_epochs``."""

    name = "sequential"

    def concept_epochs(self, module) -> int:
        return max(int(module.trainer.max_epochs) - self.cfg.label_epochs, 0)

    def in_label_phase(self, module) -> bool:
        return module.current_epoch >= self.concept_epochs(module)

    def label_head_trained(self, module) -> bool:
        return module.in_label_phase()

    def on_fit_start(self, module) -> None:
        if self.cfg.label_epochs < 1 or self.concept_epochs(module) < 1:
            raise ValueError(
                f"cbm.mode=sequential needs 1 <= cbm.label_epochs < trainer.max_epochs; got "
                f"label_epochs={self.cfg.label_epochs}, max_epochs={module.trainer.max_epochs}"
            )

    @staticmethod
    def frozen(model) -> list[torch.nn.Module]:
        """X->C: what the label phase freezes."""
        return [m for m in (model.backbone, model.concept_heads, model.token_pooler) if m is not None]

    def on_train_epoch_start(self, module) -> None:
        if module.in_label_phase():
            # X->C is frozen: no gradients, no dropout, so C->Y sees the concepts used at test time
            for part in self.frozen(module.model):
                part.eval()
                part.requires_grad_(False)

    def lr_phases(self, module, total_steps: int) -> dict[str, list[tuple[int, int]]]:
        per_epoch = total_steps // max(int(module.trainer.max_epochs), 1)
        split = per_epoch * self.concept_epochs(module)
        return {"backbone": [(0, split)], "concept_heads": [(0, split)], "label_head": [(split, total_steps)],
                "residual": [(split, total_steps)]}

    def losses(self, module, batch):
        m = module.model
        if not module.in_label_phase():  # concept phase: X->C only
            out = m(batch["input_ids"], batch["attention_mask"])
            closs = module.concept_loss(out.concept_logits, batch["concepts"])
            return closs, {"concept": closs}, out
        for part in self.frozen(m):  # Lightning puts modules back in train mode after validation
            part.eval()
        with torch.no_grad():
            features, extras = m.encode(batch["input_ids"], batch["attention_mask"])
            outputs = m.bottleneck(features, extras).apply(torch.Tensor.detach)
        if m.residual_head is not None:  # the residual channel trains with the label head
            outputs.residual = m.residual_head(features)
        parts = module.residual_penalties(outputs)
        label_logits = module.label_logits_for_training(outputs, batch["concepts"])
        task = module.task_loss(label_logits, batch["label"], batch.get("index"))
        out = CBMOutput(label_logits, outputs.logits, pooler=outputs.pooler)
        return task + sum(parts.values()), {"task": task, **parts}, out


class Independent(TrainingMode):
    """C->Y fitted on the true concepts at fit start and frozen; X->C trains on the concept loss alone."""

    name = "independent"

    def on_fit_start(self, module) -> None:
        self.fit_label_head(module)

    def fit_label_head(self, module, max_iter: int = 500) -> None:
        """Fit C->Y on the one-hot TRUE concepts of the training split to convergence (full batch, L-BFGS,
        class-weighted with ``cbm.label_class_weight``), then freeze it. Fitted by minibatch SGD inside the
        loop instead, the head fell short of a logistic regression on the same concepts by 1-3 macro-F1
        points on CEBaB."""
        train = module.train_split("cbm.mode=independent fits its label head on the training split's true concepts")
        head = module.model.label_head
        head.requires_grad_(True)
        concepts = torch.as_tensor(train.concepts, dtype=torch.long, device=module.device)
        x = one_hot_concepts(concepts, module.concept_set.cardinalities)
        y = torch.as_tensor(train.labels, dtype=torch.long, device=module.device)
        weight = None if module.label_weights is None else module.label_weights.to(x)
        params = list(head.parameters())
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")
        l2 = 0.5 / x.shape[0]  # logistic regression with C=1 (scikit-learn's default), per example

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(head(x), y, weight=weight) + l2 * sum(p.pow(2).sum() for p in params)
            loss.backward()
            return loss

        with torch.enable_grad():
            head.train()
            opt.step(closure)
        head.requires_grad_(False)  # X->C trains alone from here

    def losses(self, module, batch):
        out = module.model(batch["input_ids"], batch["attention_mask"])
        closs = module.concept_loss(out.concept_logits, batch["concepts"])
        return closs, {"concept": closs}, out


#: The training object of each mode in :data:`sparsecbm.models.cbm.MODES` (the one list of mode names).
MODE_CLASSES: dict[str, type[TrainingMode]] = {m.name: m for m in (Standard, Joint, Sequential, Independent)}
assert tuple(MODE_CLASSES) == MODES, "a mode class for every name in sparsecbm.models.cbm.MODES"


def training_mode(cfg: CBMConfig) -> TrainingMode:
    """The mode object ``cfg.mode`` names."""
    if cfg.mode not in MODE_CLASSES:
        raise ValueError(f"cbm.mode='{cfg.mode}' is not valid; expected one of {MODES}")
    return MODE_CLASSES[cfg.mode](cfg)
