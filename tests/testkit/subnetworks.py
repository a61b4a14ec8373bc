"""Tiny per-concept subnetwork backbones (K=3 concepts) with random masks, and a random token batch."""

from __future__ import annotations

import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.models.backbone import Backbone
from sparsecbm.sparsity import SubnetworkBackbone
from testkit.backbones import TINY as TINY_BASE

K = 3
TINY = {**TINY_BASE, "llama_mha": {**TINY_BASE["llama"], "num_key_value_heads": 2}}
CS = ConceptSet.from_config([{"name": n} for n in ("food", "service", "noise")],
                            {"column": "y", "values": ["1", "2", "3"]}, values=["neg", "pos", "unk"])


def sparse(kind="bert", granularity="unstructured", impl="batched", seed=0, **kw) -> SubnetworkBackbone:
    torch.manual_seed(seed)
    pooling = "mean" if kind == "bert" else "last"
    bb = Backbone("minilm", pooling=pooling, pretrained=False, config=dict(TINY[kind]))
    return SubnetworkBackbone(bb, K, granularity=granularity, impl=impl, **kw).eval()


def random_masks(sb: SubnetworkBackbone, sparsity=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    for layer in sb.masked_layers().values():
        if layer.role == "weights":
            layer.mask_weights.copy_(torch.rand(layer.mask_weights.shape, generator=g) > sparsity)
    for group in sb.unit_groups().values():
        n = group.n_units
        keep = max(1, round(n * (1 - sparsity)))
        group.set_units(torch.stack([torch.randperm(n, generator=g)[:keep] for _ in range(sb.state.n_masks)])
                        .new_zeros(sb.state.n_masks, n).scatter_(1, torch.stack(
                            [torch.randperm(n, generator=g)[:keep] for _ in range(sb.state.n_masks)]), 1).bool())


def batch(b=2, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, -2:] = 0
    return ids, mask
