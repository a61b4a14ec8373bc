"""The checkpoint format, written and read here; load a trained model back offline, without the config files.

:class:`CheckpointMetadata` (a Lightning callback that ``train`` adds to every trainer) writes the
``checkpoint["sparsecbm"]`` metadata: the concepts, the flat ``cbm`` options, the backbone's Hugging Face
config and the sparsity settings; :func:`read_checkpoint` checks it and :func:`load_checkpoint` rebuilds
the module from it.

:class:`InferenceSession` is what the inference entry points (evaluate, intervene, explain, label refit)
share: the checkpoint's module on a device, its data (its own data config, another one, or overrides
such as ``data.root=DIR``) checked against the concepts it was trained on, and tokenisation of raw texts
like the training data (with the number of truncated texts).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import CheckpointError, DataError

CHECKPOINT_KEY = "sparsecbm"
#: The checkpoint metadata format this version writes and reads (``checkpoint["sparsecbm"]["format"]``).
FORMAT_VERSION = 1


def checkpoint_metadata(module) -> dict[str, Any]:
    """What a checkpoint of ``module`` (a :class:`~sparsecbm.lit.CBMLitModule`) stores besides its weights.
    ``cbm`` is the flat options dict (the same keys as before ``conf/cbm`` had a ``_target_``)."""
    bb = module.model.backbone
    return {
        "format": FORMAT_VERSION,
        "concepts": module.concept_set.to_dict(),
        "cbm": module.cbm.to_dict(),
        "head_lr": module.head_lr,
        "run_config": module.run_config,
        "backbone": {
            "name_or_path": bb.name_or_path,
            "pooling": bb.pooling,
            "tokenizer": bb.tokenizer_name,
            "hf_config": bb.model.config.to_dict(),
            "lora": getattr(bb, "lora", None),
        },
        "sparsity": getattr(bb, "settings", None),
    }


class CheckpointMetadata(L.Callback):
    """Writes :func:`checkpoint_metadata` into every checkpoint the trainer saves (``train`` adds it; add
    it to a ``Trainer`` you build yourself so that :func:`load_checkpoint` can read its checkpoints)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(pl_module)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary, or a :class:`CheckpointError` naming what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        hint = " (a folder: pass its checkpoints/best.ckpt)" if path.is_dir() else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}; expected ckpt_path=<run>/checkpoints/best.ckpt "
                              "or last.ckpt written by `python -m sparsecbm.train`")
    size = path.stat().st_size
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        if size == 0 or (zipfile.is_zipfile(path) is False and _looks_like_zip_start(path)):
            raise CheckpointError(
                f"{path} is truncated ({size} bytes; its end is missing): the run was probably killed while "
                "writing it. Use the run's other checkpoint (checkpoints/last.ckpt or best.ckpt) or train again"
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); expected a .ckpt written by "
                              "`python -m sparsecbm.train`") from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"{path} was not written by sparsecbm (no '{CHECKPOINT_KEY}' metadata); expected a "
                              "checkpoint of `python -m sparsecbm.train`")
    version = ckpt[CHECKPOINT_KEY].get("format") if isinstance(ckpt[CHECKPOINT_KEY], Mapping) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, but this sparsecbm reads format {FORMAT_VERSION}; load it "
            "with the sparsecbm version that wrote it, or train again"
        )
    return ckpt


def _looks_like_zip_start(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"  # torch.save's zip container, whose directory (at the end) is gone


def load_checkpoint(path: str | Path, map_location: str = "cpu"):
    """Rebuild the :class:`~sparsecbm.lit.CBMLitModule` stored in ``path`` (eval mode).

    The backbone is rebuilt from the Hugging Face config saved in the checkpoint, so no
    download is needed; the tokenizer is loaded from the name or path it was trained with.

    Example:
        >>> module = load_checkpoint("outputs/train/runs/.../checkpoints/best.ckpt")
        >>> module.model.concepts.names
        ['food', 'ambiance', 'service', 'noise']
    """
    from sparsecbm.lit.module import CBMLitModule
    from sparsecbm.models.backbone import Backbone

    ckpt = read_checkpoint(path)
    meta = ckpt[CHECKPOINT_KEY]
    bb = meta["backbone"]
    backbone = Backbone.from_hf_config(bb["hf_config"], bb["pooling"], bb["name_or_path"], bb["tokenizer"],
                                       lora=bb.get("lora"))
    concepts = ConceptSet.from_dict(meta["concepts"])
    if meta.get("sparsity"):
        from sparsecbm.sparsity import SubnetworkBackbone

        backbone = SubnetworkBackbone(backbone, len(concepts), **meta["sparsity"])
    module = CBMLitModule(backbone, concepts, cbm=meta["cbm"], head_lr=meta["head_lr"])  # cbm: the flat options
    module.run_config = meta.get("run_config")
    # scorer state (movement scores) only matters while training: not needed to predict
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.endswith("mask_movement")}
    module.load_state_dict(state)
    module.checkpoint_meta = meta
    return module.to(map_location).eval()


def _same_concepts(a: ConceptSet, b: ConceptSet) -> bool:
    """Same concept names, columns and values, and the same label (raw-string aliases may differ)."""
    key = lambda cs: [(c.name, c.column, c.values) for c in cs]  # noqa: E731
    return key(a) == key(b) and (a.label.column, a.label.values) == (b.label.column, b.label.values)


def checkpoint_data_config(module, data_cfg=None):
    """The data config an inference command uses for ``module`` (an OmegaConf ``DictConfig``).

    ``data_cfg`` is ``None`` (the checkpoint's own), a full data config (with ``_target_``) or overrides
    applied to the checkpoint's own (``{"root": DIR}``).
    """
    from omegaconf import OmegaConf

    if data_cfg is not None and not isinstance(data_cfg, Mapping) and not OmegaConf.is_config(data_cfg):
        raise TypeError(f"data_cfg must be a mapping, got {type(data_cfg).__name__}")
    data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg)
                                else dict(data_cfg or {}))
    if "_target_" not in data_cfg:
        own = (module.run_config or {}).get("data")
        if not own:
            raise DataError("the checkpoint has no data config; pass data=<name> (and data.root=DIR)")
        data_cfg = OmegaConf.merge(OmegaConf.create(own), data_cfg)
    data_cfg.tokenizer = module.model.backbone.tokenizer_name
    return data_cfg


class InferenceSession:
    """A checkpoint loaded for inference, with its data and tokenisation.

    Args:
        module: A loaded :class:`~sparsecbm.lit.CBMLitModule`.
        data_cfg: ``None`` (the checkpoint's own data config), a full data config or overrides
            (``{"root": DIR}``); see :func:`checkpoint_data_config`.
        device: Torch device string the module lives on.
        ckpt_path: Where it came from (for messages and outputs).

    Example:
        >>> session = InferenceSession.from_checkpoint("runs/x/checkpoints/best.ckpt", {"root": "data/cebab"})
        >>> dm = session.datamodule()            # set up, checked against the checkpoint's concepts
        >>> batch, n_truncated = session.tokenize(["The pasta was cold."])
    """

    def __init__(self, module, data_cfg=None, device: str = "cpu", ckpt_path: str | Path | None = None):
        self.module, self.data_cfg, self.device = module, data_cfg, device
        self.ckpt_path = None if ckpt_path is None else Path(ckpt_path)
        self._datamodules: dict[str | None, Any] = {}
        self._tokenizer = None

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu", data_cfg=None) -> InferenceSession:
        """Load ``path`` onto the torch device ``map_location`` (``cpu``, ``cuda``, ...)."""
        return cls(load_checkpoint(path, map_location), data_cfg, map_location, path)

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, data_cfg=None, accelerator: str = "auto") -> InferenceSession:
        """Load ``ckpt_path`` onto the device ``accelerator`` (``auto|cpu|gpu``) names."""
        from sparsecbm.config import resolve_device

        device = resolve_device(accelerator)
        return cls(load_checkpoint(ckpt_path, map_location=device), data_cfg, device, ckpt_path)

    @property
    def concept_set(self) -> ConceptSet:
        return self.module.concept_set

    @property
    def max_length(self) -> int:
        """The training data's truncation length (``data.max_length`` overrides it)."""
        own = ((self.module.run_config or {}).get("data") or {}).get("max_length", 128)
        given = (self.data_cfg or {}).get("max_length") if self.data_cfg is not None else None
        return int(given if given is not None else own)

    @property
    def run_dir(self) -> Path | None:
        """The training run's folder (``<run>/checkpoints/best.ckpt`` -> ``<run>``), when it looks like one."""
        if self.ckpt_path is None:
            return None
        parent = Path(self.ckpt_path).resolve().parent
        return parent.parent if parent.name == "checkpoints" else parent

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` on the session's device, tokenised like the training data."""
        return self.tokenize(texts)[0]

    def require_concepts(self, purpose: str) -> None:
        """A :class:`CheckpointError` for a ``standard`` model (no concepts) where ``purpose`` needs them."""
        if not self.module.model.has_concepts:
            raise CheckpointError(
                f"{self.ckpt_path or 'this checkpoint'} is a '{self.module.mode}' model without concepts, so it "
                f"cannot {purpose}; use a checkpoint trained with concepts (cbm=cem, joint, sequential, "
                "independent, strict or hybrid)"
            )

    def datamodule(self, cache_dir: str | None = None):
        """The set-up :class:`~sparsecbm.data.CBMDataModule` (built once), checked against the checkpoint."""
        from hydra.utils import instantiate

        if cache_dir not in self._datamodules:
            cfg = checkpoint_data_config(self.module, self.data_cfg)
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

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from sparsecbm.models.backbone import load_tokenizer

            self._tokenizer = load_tokenizer(self.module.model.backbone.tokenizer_name)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
        """Padded ``input_ids`` / ``attention_mask`` on the session's device, truncated like the training data,
        and how many texts were longer than ``max_length`` tokens (cut to it)."""
        max_length = int(max_length or self.max_length)
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        longer = self.tokenizer(list(texts), truncation=True, max_length=max_length + 1)["input_ids"]
        n_cut = sum(len(ids) > max_length for ids in longer)
        batch = {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}
        return batch, n_cut
