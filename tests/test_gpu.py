"""Device-only checks (``-m gpu``; skipped without CUDA): a sparse CBM trains and serves on the GPU with the
same predictions as on the CPU."""

import pytest
import torch
from conftest import TINY_BERT

from sparsecbm.session import InferenceSession
from sparsecbm.train import train


@pytest.mark.gpu
def test_sparse_run_on_gpu_matches_cpu_inference(cfg_factory, tmp_path):
    results, _ = train(cfg_factory(["experiment=smoke", *TINY_BERT, "sparsity=structured", "accelerator=gpu"]))
    ckpt = results["run"]["best_checkpoint"]
    texts = ["The pasta was cold and the room was loud.", "Lovely staff, great wine."]
    gpu, cpu = InferenceSession.from_checkpoint(ckpt, accelerator="gpu"), InferenceSession.from_checkpoint(ckpt,
                                                                                                          accelerator="cpu")
    with torch.no_grad():
        a = gpu.encode(texts).label_logits
        b = cpu.encode(texts).label_logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
