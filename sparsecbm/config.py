"""Hydra/OmegaConf helpers shared by every entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparsecbm.errors import ConfigError, F, entry_point, user_errors

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
    """Hide tokenizers' fork warning and HF progress bars in our runs; print each Lightning line once, without
    its advertising (:func:`sparsecbm.logs.route_library_logs`)."""
    from sparsecbm.logs import route_library_logs

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    route_library_logs()


#: Split names every entry point accepts (``split=``, ``splits=``).
SPLIT_NAMES = ("train", "dev", "test")
#: ``accelerator=`` values every entry point accepts (Lightning's names).
ACCELERATORS = ("auto", "cpu", "gpu")


def check_split(split: Any, option: str = "split") -> str:
    """``split`` if it is ``train``, ``dev`` or ``test``; else a :class:`~sparsecbm.errors.ConfigError`."""
    if split not in SPLIT_NAMES:
        hint = " (the validation split is called dev)" if str(split).lower() in ("val", "valid", "validation") else ""
        raise ConfigError(f"{option}='{split}' is not valid; expected one of {list(SPLIT_NAMES)}{hint}")
    return str(split)


def resolve_device(accelerator: Any = "auto") -> str:
    """``accelerator=auto|cpu|gpu`` -> the torch device string (``cuda`` or ``cpu``)."""
    import torch

    accelerator = str(accelerator).lower()
    if accelerator in ("cuda",):  # the torch spelling, accepted too
        accelerator = "gpu"
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"accelerator='{accelerator}' is not valid; expected one of {list(ACCELERATORS)}")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("accelerator=gpu, but torch sees no CUDA device; pass accelerator=cpu (or auto), "
                          "or install a CUDA build of torch")
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if accelerator == "gpu" else "cpu"


def hydra_entry_point(config_name: str, config_path: str | None = None) -> Callable[[F], F]:
    """``@hydra.main`` for ``conf/<config_name>.yaml`` with the project's error path on both sides of it.

    Decorating registers the ``sc.*`` resolvers (:func:`register_resolvers`, at import time, so a test that
    composes the config and calls the entry point's function resolves them too); each call quiets the
    libraries (:func:`quiet_libraries`), then runs the task inside its run folder
    (:func:`sparsecbm.runs.run_folder`: checked writable, rolled back if the command fails before it starts,
    a resume command on SIGTERM/SIGINT) after checking every declared option of ``config_name``
    (:func:`sparsecbm.options.check_options`: ranges, names, files, folders, ports), before anything heavy.

    Example:
        >>> @hydra_entry_point("serve")
        ... def main(cfg) -> None:
        ...     serve(cfg)          # raise ConfigError / DataError / CheckpointError for user errors
    """
    register_resolvers()

    def decorate(task: F) -> F:
        import functools

        import hydra

        @functools.wraps(task)
        def quiet_task(cfg: DictConfig) -> Any:
            from sparsecbm.options import check_options
            from sparsecbm.runs import run_folder

            quiet_libraries()
            with run_folder(cfg, config_name):
                check_options(config_name, cfg)
                return task(cfg)

        hydra_main = hydra.main(version_base="1.3", config_path=config_path or CONF_DIR,
                                config_name=config_name)(user_errors(quiet_task))
        return entry_point(hydra_main)  # type: ignore[return-value]

    return decorate
