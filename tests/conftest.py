"""Shared fixtures: offline environment, composed real configs, tiny random backbones."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from testkit import TINY_BERT, compose_cfg  # noqa: E402

from sparsecbm.config import register_resolvers  # noqa: E402

register_resolvers()
torch.set_num_threads(1)


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda overrides, name="train", out=None: compose_cfg(out or tmp_path, overrides, name)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from sparsecbm.models.backbone import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """The tiny CEBaB fixture annotated with a 2-concept bank (food graded in 5 levels): testkit.annotated."""
    from testkit.annotated import annotate_tiny

    return annotate_tiny(tmp_path_factory.mktemp("annotated"))


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


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests need a CUDA device: skipped, saying so, on a machine without one (CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu marker)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

