"""The ``cbm`` constructor config: every option of a concept-bottleneck model and its training mode.

``conf/cbm/*.yaml`` name it with ``_target_: sparsecbm.models.cbm_config.CBMConfig`` and Hydra builds it;
Python code passes a :class:`CBMConfig` or a plain mapping of the same (flat) keys. The defaults live
here and only here; :meth:`CBMConfig.build` makes the :class:`ConceptBottleneckModel` (with its token
pooler and, for ``label_sparsity=topk``, the top-k label head). The training mode object that reads
``mode``, the loss weights and the training options is :func:`sparsecbm.lit.modes.training_mode`.

Example:
    >>> cfg = CBMConfig(mode="independent", activation="hard", tokens="attention")
    >>> model = cfg.build(backbone, concepts)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import ConfigError
from sparsecbm.models.cbm import ConceptBottleneckModel

CLASS_WEIGHTS = ("none", "balanced", "sqrt")
_NONE_IS = {"concept_class_weight": "none", "label_class_weight": "none", "tokens": "none",
            "label_sparsity": "none", "residual_dim": 0, "residual_drop_prob": 0.0}


@dataclass
class CBMConfig:
    """Args (``cbm.<name>`` on the command line):
        mode: ``standard`` | ``joint`` | ``sequential`` | ``independent`` (:mod:`sparsecbm.lit.modes`).
        activation: What the label head reads: ``logits`` | ``probs`` | ``hard`` | ``embedding``.
        embedding_dim: Size of every concept value's embedding (``activation=embedding``).
        label_head: ``linear`` | ``mlp`` (``mlp_hidden`` units); ``dropout`` before the concept heads.
        concept_loss_weight: Joint mode's weight of the concept loss beside the task loss.
        concept_class_weight / label_class_weight: ``none`` | ``balanced`` (``n / (C * count)``) | ``sqrt`` (its
            square root) cross-entropy class weights.
        label_logit_adjust: τ of the logit-adjusted task loss (Menon et al. 2021): in training the label
            logits get ``τ · log(train class frequency)`` added before the cross-entropy, so the head's own
            logits (used at inference, unchanged) lean to the rare classes; 0 is off.
        label_epochs: Sequential mode: epochs of C->Y at the end (X->C frozen).
        train_intervention_prob: Per concept and example, the label head reads the true value's activation.
        prototype_prob: ``activation=embedding``: per example, the label head reads every concept as its
            value prototype (batch mean of the value's embedding) instead of the review's own embedding
            (:func:`sparsecbm.lit.losses.prototype_embeddings`): lowers the value-only leakage.
        residual_dim / residual_penalty / residual_drop_prob: hybrid bottleneck (an unnamed channel).
        tokens: ``none`` | ``gates`` (``token_budget``, ``token_penalty``, ``token_init_open``) | ``attention``.
        label_sparsity: ``none`` | ``l1`` (``label_l1``) | ``topk`` (``label_topk`` concepts per label).
        counterfactual_weight: Weight of the counterfactual-consistency term (0 = off; :mod:`sparsecbm.lit.counterfactual`):
            the intervention ``do(C = b)`` on a training text should predict what the model says on a training
            text whose ``C`` is ``b`` (and whose other concepts are the same).
        teacher / teacher_weight: A checkpoint to imitate (a concept proxy of a black box): the task loss becomes
            ``(1 - teacher_weight) CE + teacher_weight KL(teacher || model)`` on the training texts.
    """

    mode: str = "joint"
    activation: str = "logits"
    embedding_dim: int = 16
    label_head: str = "linear"
    mlp_hidden: int = 64
    dropout: float = 0.1
    concept_loss_weight: float = 1.0
    concept_class_weight: str = "none"
    label_class_weight: str = "none"
    label_logit_adjust: float = 0.0
    label_epochs: int = 0
    train_intervention_prob: float = 0.0
    prototype_prob: float = 0.0
    residual_dim: int = 0
    residual_penalty: float = 1.0
    residual_drop_prob: float = 0.0
    tokens: str = "none"
    token_budget: float = 0.2
    token_penalty: float = 1.0
    token_init_open: float = 1.0
    label_sparsity: str = "none"
    label_l1: float = 1.0e-3
    label_topk: int = 2
    counterfactual_weight: float = 0.0
    teacher: str | None = None
    teacher_weight: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # YAML null means "off"; numbers from the command line may be strings
            value = getattr(self, f.name)
            if value is None and f.name in _NONE_IS:
                value = _NONE_IS[f.name]
            if f.type in ("int", "float") and value is not None and not isinstance(value, bool):
                try:
                    value = int(value) if f.type == "int" else float(value)
                except (TypeError, ValueError):
                    pass  # check_object names the option and what it expects
            setattr(self, f.name, value)
        from sparsecbm.options import CBM, check_object

        check_object(self, CBM)  # the ranges and names of sparsecbm.options (declared once, checked before training too)
        if self.counterfactual_weight > 0 and self.mode != "joint":
            raise ConfigError(f"cbm.counterfactual_weight={self.counterfactual_weight} trains the label head on "
                              f"interventions, which cbm.mode={self.mode} does not do jointly; use cbm.mode=joint "
                              "(cbm=cem, joint or hybrid)")
        if self.prototype_prob > 0 and self.activation != "embedding":
            raise ConfigError(f"cbm.prototype_prob={self.prototype_prob} needs cbm.activation=embedding (concept "
                              f"embeddings to replace by their value prototypes); got activation={self.activation}")

    @classmethod
    def coerce(cls, cbm: CBMConfig | Mapping[str, Any] | None) -> CBMConfig:
        """A :class:`CBMConfig` from itself, a mapping of its keys (a checkpoint's ``cbm``, a ``DictConfig``;
        ``_target_`` is ignored) or ``None`` (the defaults). An unknown key is an error, not silently unused."""
        if isinstance(cbm, cls):
            return cbm
        from omegaconf import OmegaConf

        items = OmegaConf.to_container(cbm, resolve=True) if OmegaConf.is_config(cbm) else dict(cbm or {})
        items = {k: v for k, v in items.items() if not str(k).startswith("_")}
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(items) - known):
            raise ConfigError(f"unknown cbm option(s) {unknown}; expected some of {sorted(known)}")
        return cls(**items)

    def to_dict(self) -> dict[str, Any]:
        """The flat plain form (what a checkpoint stores and :meth:`coerce` reads back)."""
        return dataclasses.asdict(self)

    def token_pooler(self, hidden: int, n_concepts: int) -> nn.Module | None:
        """The token pooler ``tokens`` names (``None`` for ``none``)."""
        from sparsecbm.models.token_attention import ConceptAttentionPooler
        from sparsecbm.models.token_gates import HardConcreteTokenGates
        from sparsecbm.models.token_pooler import TOKEN_POOLERS

        kind = self.tokens
        if kind == "none":
            return None
        if kind in TOKEN_POOLERS and self.mode == "standard":
            raise ValueError(f"cbm.tokens={kind} needs concepts; cbm.mode=standard has none")
        if kind == "attention":
            return ConceptAttentionPooler(hidden, n_concepts)
        if kind == "gates":
            return HardConcreteTokenGates(hidden, n_concepts, budget=self.token_budget, penalty=self.token_penalty,
                                          init_open=self.token_init_open)
        raise ValueError(f"cbm.tokens='{kind}' is not valid; expected one of {TOKEN_POOLERS}")

    def build(self, backbone: nn.Module, concepts: ConceptSet) -> ConceptBottleneckModel:
        """The model: backbone, token pooler, concept heads, (residual channel,) label head."""
        from sparsecbm.models.label_sparsity import make_sparse_label_head

        model = ConceptBottleneckModel(
            backbone, concepts, mode=self.mode, activation=self.activation, label_head=self.label_head,
            mlp_hidden=self.mlp_hidden, dropout=self.dropout,
            token_pooler=self.token_pooler(backbone.hidden_size, len(concepts.names)),
            embedding_dim=self.embedding_dim, residual_dim=self.residual_dim,
        )
        if model.has_concepts:  # interpretability: a sparse concept->label layer
            if model.residual_dim and self.label_sparsity == "topk":
                raise ValueError("cbm.label_sparsity=topk selects concepts per label; it cannot be combined "
                                 "with a residual channel (cbm.residual_dim > 0)")
            model.label_head = make_sparse_label_head(model.label_head, self.label_sparsity, model.block_widths,
                                                      self.label_topk)
        return model
