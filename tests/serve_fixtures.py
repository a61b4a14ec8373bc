"""Checkpoints the explorer tests share: import the fixture into a test module (``from serve_fixtures import ...``)."""

from __future__ import annotations

import pytest
from conftest import TINY_BERT, compose_cfg

from sparsecbm.train import train


@pytest.fixture(scope="session")
def serve_ckpts(tmp_path_factory):
    """A dense smoke CBM (cem: concept attention) and a sparse one (structured subnetworks), tiny BERT."""
    out = {}
    for name, extra in {"dense": [], "sparse": ["sparsity=structured", "sparsity.schedule.final_sparsity=0.5"]}.items():
        run = tmp_path_factory.mktemp(f"serve_{name}")
        train(compose_cfg(run, ["experiment=smoke", *TINY_BERT, *extra]))
        out[name] = run / "checkpoints" / "best.ckpt"
    return out
