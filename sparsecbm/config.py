"""Hydra/OmegaConf helpers shared by every entry point."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

#: The repository root (the folder holding ``conf/``), for an editable install.
ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")


def register_resolvers() -> None:
    """Register ``${sc.root:}`` and ``${sc.wandb_offline:}`` (idempotent)."""
    if not OmegaConf.has_resolver("sc.root"):
        OmegaConf.register_new_resolver("sc.root", lambda: str(ROOT))
    if not OmegaConf.has_resolver("sc.wandb_offline"):
        OmegaConf.register_new_resolver("sc.wandb_offline", lambda: os.environ.get("WANDB_MODE", "") != "online")


def quiet_libraries() -> None:
    """Hide tokenizers' fork warning and HF progress bars in our runs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
