"""Inference starts here: a trained model on a device, its tokenizer and its data (:class:`InferenceSession`).

Every inference command (evaluate, intervene, explain, label refit, causal, the explorer) and the Python API
start from a session:

- :meth:`InferenceSession.tokenize` is the only place a raw text is tokenised (truncated like the training
  data, with a truncation flag per text); :meth:`InferenceSession.encode` runs the model on it once;
- :func:`collect` (:meth:`InferenceSession.collect`) is the only loop that runs a model over a data loader;
- :func:`session_from_cfg` is the only place an inference command's ``ckpt_path=``, ``accelerator=``,
  ``seed=``, ``data=`` and ``data.root=`` options are read.

Nothing here imports the training side (``sparsecbm.lit``) or an entry point.

Example:
    >>> session = InferenceSession.load("runs/x/checkpoints/best.ckpt")
    >>> enc = session.encode(["The pasta was cold."])
    >>> enc.label_probs.shape, enc.truncated
    (torch.Size([1, 5]), [False])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparsecbm.checkpoint import CheckpointMeta, load_model
from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import CheckpointError, DataError
from sparsecbm.models.cbm import Collected, ConceptOutputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """Texts after the model: what every later edit of them reads (never modified).

    Attributes:
        texts: The raw texts.
        batch: ``input_ids`` / ``attention_mask`` ``[N, T]`` on the session's device.
        tokens: Per text, its real tokens (no padding), as the tokenizer spells them.
        truncated: Per text, whether it was longer than ``max_length`` tokens (cut to it).
        outputs: Concept outputs (float, on CPU); ``None`` for a model without concepts.
        label_logits: ``[N, L]`` (float, on CPU).
        token_weights: ``[K, N, T]`` what each concept read of each token (attention / gates), or ``None``.
        ms: Milliseconds the tokenizer and the model took.
    """

    texts: list[str]
    batch: dict[str, torch.Tensor]
    tokens: list[list[str]]
    truncated: list[bool]
    outputs: ConceptOutputs | None
    label_logits: torch.Tensor
    token_weights: torch.Tensor | None
    ms: float

    @property
    def label_probs(self) -> torch.Tensor:
        return self.label_logits.softmax(-1)

    def row(self, i: int) -> Encoded:
        """The ``i``-th text alone (padding columns kept)."""
        pick = lambda t: t[i:i + 1]  # noqa: E731
        return Encoded([self.texts[i]], {k: pick(v) for k, v in self.batch.items()}, [self.tokens[i]],
                       [self.truncated[i]], None if self.outputs is None else self.outputs.apply(pick),
                       pick(self.label_logits), None if self.token_weights is None else self.token_weights[:, i:i + 1],
                       self.ms)


@torch.no_grad()
def run_model(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[ConceptOutputs | None, torch.Tensor]:
    """``(concept outputs or None, label logits)`` of one batch, in eval mode (dropout off)."""
    if not model.has_concepts:
        return None, model(input_ids, attention_mask).label_logits
    outputs = model.concept_outputs(input_ids, attention_mask)
    return outputs, model.label_from_outputs(outputs)[0]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def collect(model, loader: Iterable[Mapping[str, torch.Tensor]]) -> Collected:
    """Run ``model`` over ``loader`` once (eval mode): concept outputs, true concepts, labels, label logits.

    The one loop every split-level analysis reads (ceiling / leakage reports, intervention curves, label
    refits, the explorer's dataset view). Outputs are float32 on the CPU.
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    outputs, truth, labels, logits = [], [], [], []
    try:
        for batch in loader:
            out, label_logits = run_model(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
            if out is not None:
                outputs.append(out.apply(lambda t: t.detach().float().cpu()))
            logits.append(label_logits.detach().float().cpu())
            if "concepts" in batch:
                truth.append(batch["concepts"].cpu())
            labels.append(batch["label"].cpu())
    finally:
        model.train(was_training)
    if not labels:
        raise DataError("no examples to evaluate: the split is empty")
    return Collected(ConceptOutputs.cat(outputs) if outputs else None, torch.cat(truth) if truth else None,
                     torch.cat(labels), torch.cat(logits))


def _same_concepts(a: ConceptSet, b: ConceptSet) -> bool:
    """Same concept names, columns and values, and the same label (raw-string aliases may differ)."""
    key = lambda cs: [(c.name, c.column, c.values) for c in cs]  # noqa: E731
    return key(a) == key(b) and (a.label.column, a.label.values) == (b.label.column, b.label.values)


class InferenceSession:
    """A trained model loaded for inference, with its tokenizer and its data.

    Args:
        model: The :class:`~sparsecbm.models.cbm.ConceptBottleneckModel` (eval mode, on ``device``).
        meta: Its :class:`~sparsecbm.checkpoint.CheckpointMeta`.
        device: The torch device the model lives on.
        data_cfg: ``None`` (the checkpoint's own data config), a full data config (with ``_target_``) or
            overrides applied to the checkpoint's own (``{"root": DIR}``).
        ckpt_path: Where the model came from (for messages and outputs).
    """

    def __init__(self, model, meta: CheckpointMeta, device: str | torch.device = "cpu", data_cfg=None,
                 ckpt_path: str | Path | None = None):
        self.model, self.meta, self.device = model, meta, str(device)
        self.data_cfg = data_cfg
        self.ckpt_path = None if ckpt_path is None else Path(ckpt_path)
        self.data_explicit = data_cfg is not None  # the user asked for data (an error if it cannot be read)
        self._datamodules: dict[str | None, Any] = {}
        self._tokenizer = None

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", data_cfg=None) -> InferenceSession:
        """Load the checkpoint ``path`` onto the torch ``device`` (``cpu``, ``cuda``, ...)."""
        model, meta = load_model(path, device)
        return cls(model, meta, device, data_cfg, path)

    @classmethod
    def for_model(cls, model, cbm=None, data_cfg: Mapping[str, Any] | None = None) -> InferenceSession:
        """A session over a model built in Python (not loaded from a checkpoint), e.g. right after training:
        ``cbm`` is its :class:`~sparsecbm.models.cbm_config.CBMConfig` (or the mode and activation it has),
        ``data_cfg`` the data config its texts are read with (``max_length``; a full config for ``datamodule``)."""
        cbm = cbm if cbm is not None else {"mode": model.mode, "activation": model.activation}
        meta = CheckpointMeta.of(model, cbm, {"data": dict(data_cfg or {})})
        return cls(model.eval(), meta, model_device(model))

    @classmethod
    def from_checkpoint(cls, path: str | Path, data_cfg=None, accelerator: str = "auto") -> InferenceSession:
        """Load ``path`` onto the device ``accelerator`` (``auto|cpu|gpu``) names."""
        from sparsecbm.config import resolve_device

        return cls.load(path, resolve_device(accelerator), data_cfg)

    # ------------------------------------------------------------------ facts
    @property
    def concept_set(self) -> ConceptSet:
        return self.meta.concepts

    @property
    def mode(self) -> str:
        return self.meta.mode

    @property
    def max_length(self) -> int:
        """The training data's truncation length (``data.max_length`` overrides it)."""
        given = self.data_cfg.get("max_length") if isinstance(self.data_cfg, Mapping) or hasattr(
            self.data_cfg, "get") else None
        return int(given if given is not None else self.meta.max_length)

    @property
    def run_dir(self) -> Path | None:
        """The training run's folder (``<run>/checkpoints/best.ckpt`` -> ``<run>``), when it looks like one."""
        if self.ckpt_path is None:
            return None
        parent = Path(self.ckpt_path).resolve().parent
        return parent.parent if parent.name == "checkpoints" else parent

    def run_result(self):
        """The training run's :class:`~sparsecbm.run_result.RunResult` (its ``results.json`` beside the
        checkpoint's folder), or ``None`` when there is none or it cannot be read."""
        from sparsecbm.run_result import FILENAME, RunResult

        if self.run_dir is None or not (self.run_dir / FILENAME).is_file():
            return None
        try:
            return RunResult.load(self.run_dir)
        except (OSError, ValueError):
            return None

    def require_concepts(self, purpose: str) -> None:
        """A :class:`CheckpointError` for a model without concepts (``cbm=standard``) where ``purpose`` needs them."""
        if not self.model.has_concepts:
            raise CheckpointError(
                f"{self.ckpt_path or 'this checkpoint'} is a '{self.mode}' model without concepts, so it cannot "
                f"{purpose}; use a checkpoint trained with concepts (cbm=cem, joint, sequential, independent, "
                "strict or hybrid)")

    # ------------------------------------------------------------------ texts
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from sparsecbm.models.backbone import load_tokenizer

            self._tokenizer = load_tokenizer(self.meta.tokenizer_name)
        return self._tokenizer

    def _check_length(self, max_length: int) -> int:
        """``max_length``, or the backbone's number of positions when it is shorter (said once, in the log):
        a longer input would fail deep inside the model."""
        limit = getattr(getattr(self.model.backbone, "model", None), "config", None)
        limit = getattr(limit, "max_position_embeddings", None)
        if limit and max_length > int(limit):
            if not getattr(self, "_clamp_said", False):
                log.warning("data.max_length=%d is longer than the model reads (its backbone has %d positions): "
                            "texts are cut to %d tokens", max_length, limit, limit)
                self._clamp_said = True
            return int(limit)
        return max_length

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """Padded ``input_ids`` / ``attention_mask`` on the model's device, truncated like the training data,
        and per text whether it was longer than ``max_length`` tokens (cut to it). The only tokenisation of
        raw texts in sparsecbm."""
        texts = [str(t) for t in texts]
        max_length = self._check_length(int(max_length or self.max_length))
        enc = self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        longer = self.tokenizer(texts, truncation=True, max_length=max_length + 1)["input_ids"]
        truncated = [len(ids) > max_length for ids in longer]
        device = model_device(self.model)  # where the model is now (a session made for a trained model included)
        batch = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
        return batch, truncated

    def tokens(self, batch: Mapping[str, torch.Tensor]) -> list[list[str]]:
        """Per row of a tokenised batch, its real tokens (padding dropped)."""
        return [self.tokenizer.convert_ids_to_tokens(ids[m.bool()].tolist())
                for ids, m in zip(batch["input_ids"].cpu(), batch["attention_mask"].cpu())]

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> Encoded:
        """Tokenise ``texts`` and run the model on them once (see :class:`Encoded`)."""
        start = time.perf_counter()
        texts = [str(t) for t in texts]
        batch, truncated = self.tokenize(texts, max_length)
        outputs, label_logits = run_model(self.model, batch["input_ids"], batch["attention_mask"])
        weights = None
        if outputs is not None and self.model.token_pooler is not None and outputs.pooler is not None:
            weights = self.model.token_pooler.token_weights(outputs.pooler).detach().float().cpu()
        return Encoded(texts, batch, self.tokens(batch), truncated,
                       None if outputs is None else outputs.apply(lambda t: t.detach().float().cpu()),
                       label_logits.detach().float().cpu(), weights, 1000 * (time.perf_counter() - start))

    # ------------------------------------------------------------------ data
    def data_config(self):
        """The data config this session reads (an OmegaConf ``DictConfig``): the checkpoint's own, another
        one, or the checkpoint's own with overrides (see ``data_cfg``)."""
        from omegaconf import OmegaConf

        request = self.data_cfg
        if request is not None and not isinstance(request, Mapping) and not OmegaConf.is_config(request):
            raise TypeError(f"data_cfg must be a mapping, got {type(request).__name__}")
        request = OmegaConf.create(OmegaConf.to_container(request, resolve=True) if OmegaConf.is_config(request)
                                   else dict(request or {}))
        if "_target_" not in request:
            if not self.meta.data_config:
                raise DataError("the checkpoint has no data config; pass data=<name> (and data.root=DIR)")
            request = OmegaConf.merge(OmegaConf.create(self.meta.data_config), request)
        request.tokenizer = self.meta.tokenizer_name
        return request

    def datamodule(self, cache_dir: str | None = None):
        """The set-up :class:`~sparsecbm.data.CBMDataModule` (built once), checked against the checkpoint."""
        from hydra.utils import instantiate

        if cache_dir not in self._datamodules:
            cfg = self.data_config()
            if cache_dir is not None:
                cfg.cache_dir = cache_dir
            dm = instantiate(cfg)
            ours, theirs = dm.concept_set, self.concept_set
            if not _same_concepts(ours, theirs):
                raise DataError(
                    f"data '{dm.name}' has concepts {ours.names} and labels {list(ours.label.values)}, but the "
                    f"checkpoint was trained on concepts {theirs.names} and labels {list(theirs.label.values)}; "
                    "pass the data config it was trained with (or leave data= out to use the checkpoint's own)"
                )
            dm.setup()
            self._datamodules[cache_dir] = dm
        return self._datamodules[cache_dir]

    def collect(self, loader) -> Collected:
        """:func:`collect` with this session's model."""
        return collect(self.model, loader)


def data_request(cfg, tokenizer: str | None = None):
    """What an inference command's ``data=`` / ``data.root=`` options ask for: ``None`` (the checkpoint's own
    data config), a full data config (``data=<name>`` was given: it has a ``_target_``) or the overrides to
    apply to the checkpoint's own (``data.root=DIR``, ``data.encoding=...``: the keys that are not null)."""
    from omegaconf import OmegaConf, open_dict

    data = cfg.get("data")
    if data is None:
        return None
    if "_target_" in data:  # data=<name>: a whole data config (its interpolations read backbone.tokenizer)
        if tokenizer is not None:
            with open_dict(cfg):
                cfg.backbone = {"tokenizer": tokenizer}
        return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    overrides = {k: v for k, v in OmegaConf.to_container(data, resolve=True).items() if v is not None}
    return OmegaConf.create(overrides) if overrides else None


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (what Lightning's ``seed_everything`` does)."""
    import os
    import random

    import numpy as np

    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def session_from_cfg(cfg) -> InferenceSession:
    """The :class:`InferenceSession` an inference command's options ask for: ``ckpt_path=``, ``accelerator=``,
    ``seed=`` (seeds torch) and ``data=`` / ``data.root=``. The one reader of those options."""
    from sparsecbm.config import resolve_device

    seed_all(int(cfg.get("seed", 0) or 0))
    device = resolve_device(cfg.get("accelerator", "auto"))
    session = InferenceSession.load(cfg.ckpt_path, device)
    session.data_cfg = data_request(cfg, session.meta.tokenizer_name)
    session.data_explicit = session.data_cfg is not None
    return session


def load(ckpt_path: str | Path, device: str = "cpu", data_cfg=None) -> InferenceSession:
    """``sparsecbm.load(ckpt_path)``: the :class:`InferenceSession` of a checkpoint (``device="cuda"`` for a GPU)."""
    return InferenceSession.load(ckpt_path, device, data_cfg)
