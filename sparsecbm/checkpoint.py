"""Load a trained model back from a checkpoint, offline, without the original config files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import CheckpointError


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
