"""Load a trained model back from a checkpoint, offline, without the original config files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsecbm.concepts import ConceptSet


class CheckpointError(ValueError):
    """The checkpoint file is missing or was not written by sparsecbm."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    from sparsecbm.lit.module import CHECKPOINT_KEY

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"{path} was not written by sparsecbm (no '{CHECKPOINT_KEY}' metadata)")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str = "cpu"):
    """Rebuild the :class:`~sparsecbm.lit.CBMLitModule` stored in ``path`` (eval mode).

    The backbone is rebuilt from the Hugging Face config saved in the checkpoint, so no
    download is needed; the tokenizer is loaded from the name or path it was trained with.

    Example:
        >>> module = load_checkpoint("outputs/train/runs/.../checkpoints/best.ckpt")
        >>> module.model.concepts.names
        ['food', 'ambiance', 'service', 'noise']
    """
    from sparsecbm.lit.module import CHECKPOINT_KEY, CBMLitModule
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
    module = CBMLitModule(backbone, concepts, cbm=meta["cbm"], head_lr=meta["head_lr"])
    module.run_config = meta.get("run_config")
    # scorer state (movement scores) only matters while training: not needed to predict
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.endswith("mask_movement")}
    module.load_state_dict(state)
    module.checkpoint_meta = meta
    return module.to(map_location).eval()


class InferenceSession:
    """A checkpoint ready for raw text: the module (eval mode), its ConceptSet, its tokenizer and data config.

    Encodes texts exactly like :func:`sparsecbm.intervention.intervene` (same tokenizer, truncation
    and padding), so outputs computed from :meth:`encode` agree with it.

    Example:
        >>> session = InferenceSession.load("outputs/train/runs/.../checkpoints/best.ckpt")
        >>> batch = session.encode(["The pasta was cold."])
        >>> outputs = session.module.model.concept_outputs(batch["input_ids"], batch["attention_mask"])
    """

    def __init__(self, module, ckpt_path: str | Path | None = None):
        from sparsecbm.models.backbone import load_tokenizer

        self.module = module.eval()
        self.ckpt_path = None if ckpt_path is None else Path(ckpt_path)
        self.concept_set: ConceptSet = module.concept_set
        self.tokenizer = load_tokenizer(module.model.backbone.tokenizer_name)
        self.max_length = int(((module.run_config or {}).get("data") or {}).get("max_length", 128))

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> InferenceSession:
        return cls(load_checkpoint(path, map_location), path)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def run_dir(self) -> Path | None:
        """The training run's folder (``<run>/checkpoints/best.ckpt`` -> ``<run>``), when it looks like one."""
        if self.ckpt_path is None:
            return None
        parent = self.ckpt_path.resolve().parent
        return parent.parent if parent.name == "checkpoints" else parent

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` (on the module's device), tokenised like the training data."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def datamodule(self, data_cfg=None, data_root: str | None = None, cache_dir: str | None = None):
        """The checkpoint's own data config (or ``data_cfg``), checked against its concepts, set up."""
        from sparsecbm.evaluate import datamodule_for

        return datamodule_for(self.module, data_cfg, data_root, cache_dir)
