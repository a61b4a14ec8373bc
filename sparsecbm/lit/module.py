"""LightningModule: the Lightning glue around a :class:`ConceptBottleneckModel` and its training mode.

The model is built by the ``cbm`` constructor config (:class:`~sparsecbm.models.cbm_config.CBMConfig`); what
each ``cbm.mode`` trains, and when, is its mode object (:mod:`sparsecbm.lit.modes`); the shared losses are in
:mod:`sparsecbm.lit.losses`; the checkpoint metadata is written and read by :mod:`sparsecbm.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from sparsecbm.concepts import ConceptSet
from sparsecbm.lit import losses
from sparsecbm.lit.losses import balanced_class_weights  # noqa: F401  (re-exported)
from sparsecbm.lit.metrics import CBMMetrics
from sparsecbm.lit.modes import training_mode
from sparsecbm.models.cbm import ConceptOutputs, concept_cross_entropies
from sparsecbm.models.cbm_config import CBMConfig
from sparsecbm.models.label_sparsity import label_l1_penalty
from sparsecbm.sparsity.pruning import concept_losses_of

SELECT = ("label", "label+concept")  # model.select: what val/select (the best checkpoint) measures


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


class CBMLitModule(L.LightningModule):
    """Trains a :class:`ConceptBottleneckModel`.

    Args:
        backbone: Pooled-feature backbone (see :class:`~sparsecbm.models.backbone.Backbone`).
        concepts: Concept metadata of the data.
        cbm: The model and mode options: a :class:`~sparsecbm.models.cbm_config.CBMConfig` (what Hydra builds
            from ``conf/cbm/*.yaml``) or a mapping of its keys (``{"mode": "joint", "activation": "probs"}``).
        optimizer: ``functools.partial`` of a torch optimizer (lr = backbone lr).
        head_lr: Learning rate of the concept heads.
        label_lr: Learning rate of the label head (default ``head_lr``). Probabilities and one-hots in
            [0, 1] need weights of several units, so a label head reading them needs a larger rate
            than one reading logits.
        warmup_ratio: Fraction of each phase's steps spent warming up.
        select: What picks the best checkpoint (``val/select``): ``label`` (val task macro-F1) or
            ``label+concept`` (the mean of val task and concept macro-F1: a bottleneck is judged on both).
        model: An already built (e.g. loaded) model to wrap instead of building one from ``backbone``.
    """

    @classmethod
    def from_model(cls, model: torch.nn.Module, meta) -> CBMLitModule:
        """Wrap a loaded model and its :class:`~sparsecbm.checkpoint.CheckpointMeta` (e.g. an
        :class:`~sparsecbm.session.InferenceSession`'s) to validate or test it with a Lightning ``Trainer``."""
        module = cls(None, meta.concepts, cbm=meta.cbm, head_lr=meta.head_lr, model=model)
        module.run_config = meta.run_config
        return module.to(next(model.parameters()).device).eval()

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu") -> CBMLitModule:
        """The training module of a checkpoint (for ``Trainer.validate`` / ``test``; inference needs only
        :func:`~sparsecbm.checkpoint.load_model`)."""
        from sparsecbm.checkpoint import load_model

        return cls.from_model(*load_model(path, device))

    def __init__(
        self,
        backbone: torch.nn.Module,
        concepts: ConceptSet,
        cbm: CBMConfig | Mapping[str, Any] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        head_lr: float = 1e-3,
        label_lr: float | None = None,
        warmup_ratio: float = 0.1,
        select: str = "label",
        model: torch.nn.Module | None = None,
    ):
        super().__init__()
        if select not in SELECT:
            raise ValueError(f"model.select='{select}' is not valid; expected one of {SELECT}")
        self.select = select
        self.cbm = CBMConfig.coerce(cbm)
        self.concept_set = concepts
        self.model = model if model is not None else self.cbm.build(backbone, concepts)
        self.training_mode = training_mode(self.cbm)
        # per concept [C_k] cross-entropy weights (cbm.concept_class_weight=balanced), set from train at fit start
        self.concept_weights: list[torch.Tensor | None] = [None] * len(concepts.names)
        self.label_weights: torch.Tensor | None = None  # [L] (cbm.label_class_weight=balanced)
        self.label_offset: torch.Tensor | None = None  # [L] tau * log prior (cbm.label_logit_adjust), training
        self.counterfactual_terms = None  # cbm.counterfactual_weight / cbm.teacher, set up at fit start
        self.optimizer_fn, self.head_lr, self.warmup_ratio = optimizer, head_lr, warmup_ratio
        self.label_lr = float(label_lr) if label_lr is not None else head_lr
        self.run_config: dict[str, Any] | None = None  # the resolved Hydra config, saved in checkpoints
        self.metrics = torch.nn.ModuleDict(
            {f"{s}_metrics": CBMMetrics(concepts, self.model.has_concepts) for s in ("train", "val", "test")}
        )
        # token gates: fraction of each review's real tokens a concept reads at inference (deterministic gates)
        self.tokens_kept = None
        if hasattr(self.model.token_pooler, "kept_fraction"):  # token gates (attention keeps every token)
            from torchmetrics import MeanMetric

            self.tokens_kept = torch.nn.ModuleDict(
                {f"{s}_{n}": MeanMetric() for s in ("val", "test") for n in concepts.names})

    @property
    def mode(self) -> str:
        return self.training_mode.name

    @property
    def train_intervention_prob(self) -> float:
        """``cbm.train_intervention_prob`` (settable: e.g. switched off for a probe)."""
        return self.cbm.train_intervention_prob

    @train_intervention_prob.setter
    def train_intervention_prob(self, value: float) -> None:
        self.cbm.train_intervention_prob = float(value)

    # ------------------------------------------------------------------ phases
    def in_label_phase(self) -> bool:
        """Sequential mode: C->Y alone trains now."""
        return self.training_mode.in_label_phase(self)

    def on_fit_start(self) -> None:
        power = losses.CLASS_WEIGHT_POWER
        balance_concepts = self.cbm.concept_class_weight in power and self.model.has_concepts
        balance_labels = self.cbm.label_class_weight in power
        adjust = self.cbm.label_logit_adjust > 0
        if balance_concepts or balance_labels or adjust:
            key = (f"concept_class_weight={self.cbm.concept_class_weight}" if balance_concepts else
                   f"label_class_weight={self.cbm.label_class_weight}" if balance_labels else
                   f"label_logit_adjust={self.cbm.label_logit_adjust}")
            train = self.train_split(f"cbm.{key} needs the training split's class counts")
            if balance_concepts:
                self.concept_weights = balanced_class_weights(train.concepts, self.concept_set.cardinalities,
                                                              self.device, power[self.cbm.concept_class_weight])
            if balance_labels:
                labels = [[y] for y in train.labels]
                self.label_weights = balanced_class_weights(labels, [self.concept_set.label.num_classes], self.device,
                                                            power[self.cbm.label_class_weight])[0]
            if adjust:
                self.label_offset = losses.log_prior(train.labels, self.concept_set.label.num_classes,
                                                     self.cbm.label_logit_adjust).to(self.device)
        self.training_mode.on_fit_start(self)
        self.counterfactual_terms = None
        if self.cbm.counterfactual_weight > 0 or self.cbm.teacher:
            from sparsecbm.lit.counterfactual import CounterfactualTerms

            self.counterfactual_terms = CounterfactualTerms(self, self.trainer.datamodule)

    def train_split(self, why: str):
        """The datamodule's encoded training split (``.concepts``, ``.labels``); ``why`` names the option
        that needs it in the error raised when the module is fitted without a CBMDataModule."""
        dm = getattr(self.trainer, "datamodule", None)
        raw = getattr(dm, "raw", {}) if dm is not None else {}
        if "train" not in raw:
            raise ValueError(f"{why}: train through a CBMDataModule (trainer.fit(module, datamodule=...))")
        return raw["train"]

    def fit_independent_label_head(self, max_iter: int = 500) -> None:
        """Independent mode: fit C->Y on the true training concepts and freeze it (see :mod:`~sparsecbm.lit.modes`)."""
        from sparsecbm.lit.modes import Independent

        Independent(self.cbm).fit_label_head(self, max_iter)

    def on_train_epoch_start(self) -> None:
        self.training_mode.on_train_epoch_start(self)

    # ------------------------------------------------------------------ steps
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.model(input_ids, attention_mask)

    def concept_only_loss(self, concept: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concept ``concept``'s training cross-entropy (class-weighted as in :meth:`concept_loss`) through its
        own subnetwork alone (the obert scorer)."""
        logits = self.model.single_concept_logits(concept, batch["input_ids"], batch["attention_mask"])
        return concept_cross_entropies([logits], batch["concepts"][:, concept:concept + 1],
                                       [self.concept_weights[concept]])[0]

    def concept_losses(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Every concept's training cross-entropy from one pass, each through its own subnetwork (the taylor
        and fisher scorers). Reads the weights when called: they are set at fit start."""
        return concept_losses_of(self.model, lambda: self.concept_weights)(batch)

    def concept_loss(self, concept_logits: list[torch.Tensor], concepts: torch.Tensor) -> torch.Tensor:
        """Mean over concepts of the (class-weighted, ``cbm.concept_class_weight``) cross-entropy."""
        return losses.concept_loss(concept_logits, concepts, self.concept_weights)

    def task_loss(self, label_logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """Training cross-entropy of the label, class-weighted with ``cbm.label_class_weight=balanced`` and
        logit-adjusted with ``cbm.label_logit_adjust``; with ``cbm.teacher``, mixed with the teacher's
        distribution on the training texts ``index``."""
        task = losses.task_loss(label_logits, labels, self.label_weights, self.label_offset)
        terms = self.counterfactual_terms
        return task if terms is None or index is None else terms.teacher_loss(label_logits, labels, index, task)

    def counterfactual_penalties(self, batch: dict[str, torch.Tensor], outputs: ConceptOutputs) -> dict[str, torch.Tensor]:
        """``cbm.counterfactual_weight`` x the counterfactual-consistency loss (empty when off)."""
        terms = self.counterfactual_terms
        return {} if terms is None or not self.training else terms.consistency(self, batch, outputs)

    def training_losses(self, batch: dict[str, torch.Tensor]):
        """Return (total loss, parts, outputs used for metrics) for the current mode and phase."""
        return self.training_mode.losses(self, batch)

    def dropped_residual(self, residual: torch.Tensor | None) -> torch.Tensor | None:
        """Hybrid bottleneck in training: the residual held at its batch mean with ``cbm.residual_drop_prob``."""
        return losses.dropped_residual(residual, self.cbm.residual_drop_prob, self.training)

    def residual_penalties(self, outputs: ConceptOutputs) -> dict[str, torch.Tensor]:
        """Hybrid bottleneck: ``cbm.residual_penalty`` x the residual's cross-correlation with the concepts."""
        return losses.residual_penalties(outputs, self.cbm.residual_penalty)

    def training_inputs(self, outputs: ConceptOutputs, concepts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The label head's concept input with training interventions (``cbm.train_intervention_prob``)
        and the ``[B, K]`` mask of the concepts set to their true value."""
        return losses.training_inputs(self.model, outputs, concepts, self.cbm.train_intervention_prob,
                                      self.cbm.prototype_prob, self.training)

    def label_logits_for_training(self, outputs: ConceptOutputs | list[torch.Tensor], concepts: torch.Tensor) -> torch.Tensor:
        """Label logits from (randomly intervened, see :meth:`training_inputs`) concept outputs."""
        return losses.label_logits_for_training(self, outputs, concepts)

    def sparsity_penalties(self, batch: dict[str, torch.Tensor], extras: dict | None) -> dict[str, torch.Tensor]:
        """Token-gate budget (from the pooler ``extras`` of this step's forward) and label-layer L1 penalties
        (empty when both are off)."""
        out, m = {}, self.model
        if m.token_pooler is not None and extras is not None and torch.is_grad_enabled():
            if (budget := m.token_pooler.penalty(extras, batch["attention_mask"])) is not None:
                out["token_budget"] = budget
        if m.has_concepts and (l1 := label_l1_penalty(m.label_head, self.cbm.label_sparsity, self.cbm.label_l1)) is not None:
            out["label_l1"] = l1
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts, out = self.training_losses(batch)
        label_logits, concept_logits, extras = out.label_logits, out.concept_logits, out.pooler
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
        untrained_head = not self.training_mode.label_head_trained(self)
        not_pruned = self.model.sparse and not self.model.backbone.at_final_sparsity()
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
        phases = self.training_mode.lr_phases(self, total)
        lambdas = [warmup_linear(phases[g["name"]], self.warmup_ratio) for g in optimizer.param_groups]
        scheduler = LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
