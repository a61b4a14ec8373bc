"""LightningModule: losses for the four CBM training modes, optimiser groups, metrics, checkpoint metadata."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from sparsecbm.concepts import ConceptSet
from sparsecbm.lit.metrics import CBMMetrics
from sparsecbm.models.cbm import ConceptBottleneckModel, ConceptOutputs, as_outputs, one_hot_concepts
from sparsecbm.models.label_sparsity import label_l1_penalty, make_sparse_label_head
from sparsecbm.models.poolers import build_token_pooler
from sparsecbm.models.residual import cross_correlation_penalty

CHECKPOINT_KEY = "sparsecbm"
SELECT = ("label", "label+concept")  # model.select: what val/select (the best checkpoint) measures


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


def warmup_linear(step_phases: list[tuple[int, int]], warmup_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up then linear decay inside ``[start, end)``, zero outside."""

    def fn(step: int) -> float:
        for start, end in step_phases:
            if start <= step < end:
                span = max(end - start, 1)
                warm = max(int(span * warmup_ratio), 1)
                t = step - start
                return (t + 1) / warm if t < warm else max(0.0, (end - step) / max(span - warm, 1))
        return 0.0

    return fn


def balanced_class_weights(concepts, cardinalities: list[int], device=None) -> list[torch.Tensor]:
    """Per concept ``[C_k]`` weights ``n / (C_k * count)`` from ``[N, K]`` training values (sklearn's
    "balanced"): every value contributes equally to its concept's loss, which targets macro-F1. A value
    absent from training gets weight 0 (no examples to weigh)."""
    values = torch.as_tensor(concepts, dtype=torch.long).reshape(-1, len(cardinalities))
    out = []
    for k, card in enumerate(cardinalities):
        counts = torch.bincount(values[:, k], minlength=card).float()
        w = torch.where(counts > 0, values.shape[0] / (card * counts.clamp(min=1)), torch.zeros_like(counts))
        out.append(w.to(device) if device is not None else w)
    return out


class CBMLitModule(L.LightningModule):
    """Trains a :class:`ConceptBottleneckModel`.

    Args:
        backbone: Pooled-feature backbone (see :class:`~sparsecbm.models.backbone.Backbone`).
        concepts: Concept metadata of the data.
        cbm: ``mode``, ``activation``, ``label_head``, ``mlp_hidden``, ``dropout``,
            ``concept_loss_weight`` (joint λ), ``label_epochs`` (sequential: epochs of C->Y at the end),
            ``embedding_dim`` (``activation=embedding``), ``residual_dim`` and ``residual_penalty``
            (hybrid bottleneck), ``train_intervention_prob``, token gates and label sparsity.
        optimizer: ``functools.partial`` of a torch optimizer (lr = backbone lr).
        head_lr: Learning rate of the concept heads.
        label_lr: Learning rate of the label head (default ``head_lr``). Probabilities and one-hots in
            [0, 1] need weights of several units, so a label head reading them needs a larger rate
            than one reading logits.
        warmup_ratio: Fraction of each phase's steps spent warming up.
        select: What picks the best checkpoint (``val/select``): ``label`` (val task macro-F1) or
            ``label+concept`` (the mean of val task and concept macro-F1: a bottleneck is judged on both).
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        concepts: ConceptSet,
        cbm: Mapping[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        head_lr: float = 1e-3,
        label_lr: float | None = None,
        warmup_ratio: float = 0.1,
        select: str = "label",
    ):
        super().__init__()
        if select not in SELECT:
            raise ValueError(f"model.select='{select}' is not valid; expected one of {SELECT}")
        self.select = select
        self.cbm_cfg = dict(_plain(cbm))
        self.concept_set = concepts
        self.model = ConceptBottleneckModel(
            backbone,
            concepts,
            mode=self.cbm_cfg.get("mode", "joint"),
            activation=self.cbm_cfg.get("activation", "logits"),
            label_head=self.cbm_cfg.get("label_head", "linear"),
            mlp_hidden=int(self.cbm_cfg.get("mlp_hidden", 64)),
            dropout=float(self.cbm_cfg.get("dropout", 0.1)),
            token_pooler=build_token_pooler(self.cbm_cfg, backbone.hidden_size, len(concepts.names)),
            embedding_dim=int(self.cbm_cfg.get("embedding_dim", 16)),
            residual_dim=int(self.cbm_cfg.get("residual_dim", 0) or 0),
        )
        # interpretability: sparse concept->label layer (cbm.label_sparsity = none | l1 | topk)
        if self.model.has_concepts:
            if self.model.residual_dim and (self.cbm_cfg.get("label_sparsity") or "none") == "topk":
                raise ValueError("cbm.label_sparsity=topk selects concepts per label; it cannot be combined "
                                 "with a residual channel (cbm.residual_dim > 0)")
            self.model.label_head = make_sparse_label_head(self.model.label_head, self.cbm_cfg, self.model.block_widths)
        self.mode = self.model.mode
        self.concept_weight = float(self.cbm_cfg.get("concept_loss_weight", 1.0))
        self.label_epochs = int(self.cbm_cfg.get("label_epochs", 0))
        self.train_intervention_prob = float(self.cbm_cfg.get("train_intervention_prob", 0.0))
        self.residual_penalty = float(self.cbm_cfg.get("residual_penalty", 1.0))
        self.residual_drop_prob = float(self.cbm_cfg.get("residual_drop_prob", 0.0) or 0.0)
        self.concept_class_weight = str(self.cbm_cfg.get("concept_class_weight", "none") or "none")
        self.label_class_weight = str(self.cbm_cfg.get("label_class_weight", "none") or "none")
        for key, value in (("concept_class_weight", self.concept_class_weight),
                           ("label_class_weight", self.label_class_weight)):
            if value not in ("none", "balanced"):
                raise ValueError(f"cbm.{key}='{value}' is not valid; expected none or balanced")
        if not 0.0 <= self.residual_drop_prob <= 1.0:
            raise ValueError(f"cbm.residual_drop_prob={self.residual_drop_prob} must be in [0, 1]")
        # per concept [C_k] cross-entropy weights (cbm.concept_class_weight=balanced), set from train at fit start
        self.concept_weights: list[torch.Tensor | None] = [None] * len(concepts.names)
        self.label_weights: torch.Tensor | None = None  # [L] (cbm.label_class_weight=balanced)
        self.optimizer_fn, self.head_lr, self.warmup_ratio = optimizer, head_lr, warmup_ratio
        self.label_lr = float(label_lr) if label_lr is not None else head_lr
        with_c = self.model.has_concepts
        self.run_config: dict[str, Any] | None = None  # the resolved Hydra config, saved in checkpoints
        self.metrics = torch.nn.ModuleDict(
            {f"{s}_metrics": CBMMetrics(concepts, with_c) for s in ("train", "val", "test")}
        )
        # token gates: fraction of each review's real tokens a concept reads at inference (deterministic gates)
        self.tokens_kept = None
        if hasattr(self.model.token_pooler, "kept_fraction"):  # token gates (attention keeps every token)
            from torchmetrics import MeanMetric

            self.tokens_kept = torch.nn.ModuleDict(
                {f"{s}_{n}": MeanMetric() for s in ("val", "test") for n in concepts.names})

    # ------------------------------------------------------------------ phases
    @property
    def concept_epochs(self) -> int:
        """Sequential mode: the epochs that train X->C before C->Y."""
        return max(int(self.trainer.max_epochs) - self.label_epochs, 0)

    def in_label_phase(self) -> bool:
        return self.mode == "sequential" and self.current_epoch >= self.concept_epochs

    def on_fit_start(self) -> None:
        balance_concepts = self.concept_class_weight == "balanced" and self.model.has_concepts
        if balance_concepts or self.label_class_weight == "balanced":
            key = "concept_class_weight" if balance_concepts else "label_class_weight"
            train = self.train_split(f"cbm.{key}=balanced needs the training split's class counts")
            if balance_concepts:
                self.concept_weights = balanced_class_weights(train.concepts, self.concept_set.cardinalities,
                                                              self.device)
            if self.label_class_weight == "balanced":
                labels = [[y] for y in train.labels]
                self.label_weights = balanced_class_weights(labels, [self.concept_set.label.num_classes], self.device)[0]
        if self.mode == "independent":
            self.fit_independent_label_head()
        if self.mode == "sequential" and (self.label_epochs < 1 or self.concept_epochs < 1):
            raise ValueError(
                f"cbm.mode=sequential needs 1 <= cbm.label_epochs < trainer.max_epochs; got "
                f"label_epochs={self.label_epochs}, max_epochs={self.trainer.max_epochs}"
            )

    def train_split(self, why: str):
        """The datamodule's encoded training split (``.concepts``, ``.labels``); ``why`` names the option
        that needs it in the error raised when the module is fitted without a CBMDataModule."""
        dm = getattr(self.trainer, "datamodule", None)
        raw = getattr(dm, "raw", {}) if dm is not None else {}
        if "train" not in raw:
            raise ValueError(f"{why}: train through a CBMDataModule (trainer.fit(module, datamodule=...))")
        return raw["train"]

    def fit_independent_label_head(self, max_iter: int = 500) -> None:
        """Independent CBM: fit C->Y on the one-hot TRUE concepts of the training split to convergence
        (full batch, L-BFGS, class-weighted with ``cbm.label_class_weight``), then freeze it; the training
        loop trains X->C alone. Fitted by minibatch SGD inside the loop instead, the head fell short of a
        logistic regression on the same concepts by 1-3 macro-F1 points on CEBaB."""
        train = self.train_split("cbm.mode=independent fits its label head on the training split's true concepts")
        head = self.model.label_head
        head.requires_grad_(True)
        concepts = torch.as_tensor(train.concepts, dtype=torch.long, device=self.device)
        x = one_hot_concepts(concepts, self.concept_set.cardinalities)
        y = torch.as_tensor(train.labels, dtype=torch.long, device=self.device)
        weight = None if self.label_weights is None else self.label_weights.to(x)
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

    def on_train_epoch_start(self) -> None:
        if self.in_label_phase():
            # X->C is frozen: no gradients, no dropout, so C->Y sees the concepts used at test time
            frozen = (self.model.backbone, self.model.concept_heads, self.model.token_pooler)
            for module in (m for m in frozen if m is not None):
                module.eval()
                module.requires_grad_(False)

    # ------------------------------------------------------------------ steps
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.model(input_ids, attention_mask)

    def concept_only_loss(self, concept: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concept ``concept``'s cross-entropy through its own subnetwork alone (used by pruning scorers)."""
        logits = self.model.single_concept_logits(concept, batch["input_ids"], batch["attention_mask"])
        return F.cross_entropy(logits, batch["concepts"][:, concept])

    def concept_loss(self, concept_logits: list[torch.Tensor], concepts: torch.Tensor) -> torch.Tensor:
        """Mean over concepts of the (class-weighted, ``cbm.concept_class_weight``) cross-entropy."""
        return torch.stack([
            F.cross_entropy(lg, concepts[:, k], weight=None if (w := self.concept_weights[k]) is None else w.to(lg))
            for k, lg in enumerate(concept_logits)
        ]).mean()

    def task_loss(self, label_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training cross-entropy of the label, class-weighted with ``cbm.label_class_weight=balanced``."""
        w = self.label_weights
        return F.cross_entropy(label_logits, labels, weight=None if w is None else w.to(label_logits))

    def training_losses(self, batch: dict[str, torch.Tensor]):
        """Return (total loss, parts, outputs used for metrics) for the current mode and phase."""
        m = self.model
        if self.mode == "standard":
            out = m(batch["input_ids"], batch["attention_mask"])
            task = self.task_loss(out.label_logits, batch["label"])
            return task, {"task": task}, out
        if self.mode == "sequential" and self.in_label_phase():
            m.backbone.eval()  # Lightning puts modules back in train mode after validation
            m.concept_heads.eval()
            if m.token_pooler is not None:
                m.token_pooler.eval()
            with torch.no_grad():
                features, extras = m.encode(batch["input_ids"], batch["attention_mask"])
                outputs = m.bottleneck(features, extras).apply(torch.Tensor.detach)
            if m.residual_head is not None:  # the residual channel trains with the label head
                outputs.residual = m.residual_head(features)
            parts = self.residual_penalties(outputs)
            label_logits = self.label_logits_for_training(outputs, batch["concepts"])
            task = self.task_loss(label_logits, batch["label"])
            return task + sum(parts.values()), {"task": task, **parts}, (label_logits, outputs.logits, outputs.pooler)
        out = m(batch["input_ids"], batch["attention_mask"])
        closs = self.concept_loss(out.concept_logits, batch["concepts"])
        if self.mode == "sequential":  # concept phase: X->C only
            return closs, {"concept": closs}, out
        if self.mode == "independent":  # C->Y was fitted on the true concepts at fit start and is frozen
            return closs, {"concept": closs}, out
        parts = self.residual_penalties(out.outputs)
        label_logits = self.label_logits_for_training(out.outputs, batch["concepts"])
        task = self.task_loss(label_logits, batch["label"])
        return task + self.concept_weight * closs + sum(parts.values()), {"concept": closs, "task": task, **parts}, out

    def dropped_residual(self, residual: torch.Tensor | None) -> torch.Tensor | None:
        """Hybrid bottleneck in training: each example's residual is replaced by the batch mean with
        probability ``cbm.residual_drop_prob``, so the label head must also decide from the concepts
        alone (the report's ``residual.without`` holds it at its mean the same way)."""
        if residual is None or self.residual_drop_prob <= 0 or not self.training:
            return residual
        drop = torch.rand(residual.shape[0], 1, device=residual.device) < self.residual_drop_prob
        return torch.where(drop, residual.mean(0, keepdim=True).detach(), residual)

    def residual_penalties(self, outputs: ConceptOutputs) -> dict[str, torch.Tensor]:
        """Hybrid bottleneck: ``residual_penalty`` x cross-correlation of the residual with the concept
        probabilities (empty without a residual channel)."""
        if outputs.residual is None:
            return {}
        probs = torch.cat([lg.softmax(-1) for lg in outputs.logits], dim=-1)
        return {"residual": self.residual_penalty * cross_correlation_penalty(outputs.residual, probs)}

    def training_inputs(self, outputs: ConceptOutputs, concepts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept part of the label head's input during training, and the ``[B, K]`` bool mask of the
        concepts replaced by their true value (each with probability ``cbm.train_intervention_prob``, as in
        concept-embedding-model training), so the label head learns to trust corrected concepts."""
        from sparsecbm.models.bottleneck import edited_inputs, ground_truth_targets, random_concept_mask

        if self.train_intervention_prob <= 0:  # no random draw: runs without interventions keep their RNG stream
            mask = torch.zeros(concepts.shape[0], len(outputs.logits), dtype=torch.bool, device=concepts.device)
            return self.model.label_from_outputs(outputs)[1], mask
        mask = random_concept_mask(concepts.shape[0], len(outputs.logits), self.train_intervention_prob,
                                   device=concepts.device)
        targets = ground_truth_targets(concepts, self.concept_set.cardinalities)
        return edited_inputs(outputs.logits, self.model.activation, targets, mask, embeddings=outputs.embeddings), mask

    def label_logits_for_training(self, outputs: ConceptOutputs | list[torch.Tensor], concepts: torch.Tensor) -> torch.Tensor:
        """Label logits from (randomly intervened, see :meth:`training_inputs`) concept outputs."""
        outputs = as_outputs(outputs)
        return self.model.label_from_inputs(self.training_inputs(outputs, concepts)[0],
                                            self.dropped_residual(outputs.residual))

    def sparsity_penalties(self, batch: dict[str, torch.Tensor], extras: dict | None) -> dict[str, torch.Tensor]:
        """Token-gate budget (from the pooler ``extras`` of this step's forward) and label-layer L1 penalties
        (empty when both are off)."""
        out, m = {}, self.model
        if m.token_pooler is not None and extras is not None and torch.is_grad_enabled():
            if (budget := m.token_pooler.penalty(extras, batch["attention_mask"])) is not None:
                out["token_budget"] = budget
        if m.has_concepts and (l1 := label_l1_penalty(m.label_head, self.cbm_cfg)) is not None:
            out["label_l1"] = l1
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts, out = self.training_losses(batch)
        label_logits, concept_logits, extras = out if isinstance(out, tuple) else (
            out.label_logits, out.concept_logits, out.pooler)
        for name, penalty in self.sparsity_penalties(batch, extras).items():
            loss, parts[name] = loss + penalty, penalty
        self.metrics["train_metrics"].update(label_logits.detach(), batch["label"],
                                     [c.detach() for c in concept_logits], batch.get("concepts"))
        bs = batch["label"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, batch_size=bs)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        out = self.model(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(out.label_logits, batch["label"])
        self.log(f"{stage}/loss", loss, batch_size=batch["label"].shape[0], sync_dist=True)
        self.metrics[f"{stage}_metrics"].update(out.label_logits, batch["label"], out.concept_logits, batch.get("concepts"))
        extras = out.pooler
        if self.tokens_kept is not None and extras is not None:
            kept = self.model.token_pooler.kept_fraction(extras, batch["attention_mask"])  # [K, B]
            for k, name in enumerate(self.concept_set.names):
                self.tokens_kept[f"{stage}_{name}"].update(kept[k])

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _log_epoch(self, stage: str) -> dict[str, float]:
        values = self.metrics[f"{stage}_metrics"].compute(stage)
        self.metrics[f"{stage}_metrics"].reset()
        if self.tokens_kept is not None and stage != "train":
            for name in self.concept_set.names:
                metric = self.tokens_kept[f"{stage}_{name}"]
                values[f"{stage}/tokens_kept/{name}"] = float(metric.compute())
                metric.reset()
        # torchmetrics already synced these across data-parallel ranks; sync_dist only averages equal values
        self.log_dict(values, prog_bar=False, sync_dist=True)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        # checkpoint selection: task macro-F1, but never an epoch whose label head is untrained
        # nor a subnetwork checkpoint before the masks reach their final sparsity
        untrained_head = self.mode == "sequential" and not self.in_label_phase()
        not_pruned = not getattr(self.model.backbone, "at_final_sparsity", lambda: True)()
        score = values["val/label/f1"]
        if self.select == "label+concept" and "val/concept/f1" in values:
            score = (score + values["val/concept/f1"]) / 2
        select = -1.0 if (untrained_head or not_pruned) else score
        self.log("val/select", select, prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self):
        if self.optimizer_fn is None:
            raise ValueError("CBMLitModule was built without an optimizer; it can evaluate but not train")
        groups = self.model.parameter_groups()
        encoder = [p for p in groups["backbone"] if p.requires_grad]
        heads = groups["concept"]
        param_groups = [
            {"params": encoder, "name": "backbone"},
            {"params": heads, "lr": self.head_lr, "name": "concept_heads"},
            {"params": groups["label"], "lr": self.label_lr, "name": "label_head"},
            {"params": groups["residual"], "lr": self.head_lr, "name": "residual"},  # trains with the label head
        ]
        optimizer = self.optimizer_fn([g for g in param_groups if g["params"]])
        total = int(self.trainer.estimated_stepping_batches)
        if self.mode == "sequential":
            per_epoch = total // max(int(self.trainer.max_epochs), 1)
            split = per_epoch * self.concept_epochs
            phases = {"backbone": [(0, split)], "concept_heads": [(0, split)], "label_head": [(split, total)],
                      "residual": [(split, total)]}
        else:
            phases = {name: [(0, total)] for name in ("backbone", "concept_heads", "label_head", "residual")}
        lambdas = [warmup_linear(phases[g["name"]], self.warmup_ratio) for g in optimizer.param_groups]
        scheduler = LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bb = self.model.backbone
        checkpoint[CHECKPOINT_KEY] = {
            "format": 1,
            "concepts": self.concept_set.to_dict(),
            "cbm": self.cbm_cfg,
            "head_lr": self.head_lr,
            "run_config": self.run_config,
            "backbone": {
                "name_or_path": bb.name_or_path,
                "pooling": bb.pooling,
                "tokenizer": bb.tokenizer_name,
                "hf_config": bb.model.config.to_dict(),
                "lora": getattr(bb, "lora", None),
            },
            "sparsity": getattr(bb, "settings", None),
        }
