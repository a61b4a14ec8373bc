"""Shared fixtures: offline environment, composed real configs, tiny random backbones."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from sparsecbm.config import CONF_DIR, ROOT, register_resolvers  # noqa: E402

register_resolvers()
torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
TINY_DATA = FIXTURES / "cebab_tiny"
SHARED = ROOT.parent / "shared" / "data"
CEBAB = SHARED / "cebab"
TINY_BERT = ["backbone=tiny_bert"]


def compose_cfg(tmp_path: Path, overrides: list[str], config_name: str = "train"):
    """The real config tree, composed like the CLI does, writing into ``tmp_path``."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(
            config_name,
            overrides=[
                f"paths.output_dir={tmp_path}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                *(["callbacks.progress_bar=null"] if config_name == "train" else []),
                *overrides,
            ],
        )


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda overrides, name="train", out=None: compose_cfg(out or tmp_path, overrides, name)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from sparsecbm.models.backbone import load_tokenizer

    return load_tokenizer("minilm")


import lightning as L  # noqa: E402


class Crash(L.Callback):
    """Simulates a killed run: raises inside epoch ``epoch`` at batch ``batch``."""

    def __init__(self, epoch: int = 1, batch: int = 1):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SystemExit("simulated crash")


@pytest.fixture(scope="session")
def serve_ckpts(tmp_path_factory):
    """The explorer tests' checkpoints: a dense smoke CBM (cem, concept attention) and a sparse one
    (structured subnetworks at 0.5), tiny BERT."""
    from sparsecbm.train import train

    out = {}
    for name, extra in {"dense": [], "sparse": ["sparsity=structured", "sparsity.schedule.final_sparsity=0.5"]}.items():
        run = tmp_path_factory.mktemp(f"serve_{name}")
        train(compose_cfg(run, ["experiment=smoke", *TINY_BERT, *extra]))
        out[name] = run / "checkpoints" / "best.ckpt"
    return out


class KillAt(L.Callback):
    """Kills its own process with SIGKILL (no clean-up, no exception handlers) at ``batch`` of ``epoch``."""

    def __init__(self, epoch: int = 1, batch: int = 1):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests need a CUDA device: skipped, saying so, on a machine without one (CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu marker)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class SignalAt(L.Callback):
    """Sends signal ``sig`` (SIGTERM by default) to its own process at ``batch`` of ``epoch`` (as a user's kill or
    Ctrl+C would)."""

    def __init__(self, epoch: int = 1, batch: int = 1, sig: int = 15):
        self.epoch, self.batch, self.sig = epoch, batch, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.sig)
