"""Which heads and FFN neurons of a concept's subnetwork mattered for one prediction.

Activation × gradient of the concept's predicted-value logit, taken at the inputs of the attention
output projection (grouped per head) and of the FFN down-projection (per neuron), in the concept's
own subnetwork pass. Pruned units have zero activation there, so they score exactly 0.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsecbm.models.arch import architecture, block_position
from sparsecbm.sparsity.backbone import SubnetworkBackbone


def _readout_modules(sb: SubnetworkBackbone) -> dict[tuple[int, str], torch.nn.Module]:
    """The layers whose inputs are the heads' outputs and the FFN neurons, per block (the architecture table's
    ``attention_readout`` / ``ffn_readout``); ``{}`` for a family not in the table."""
    arch = architecture(sb.model.config.model_type)
    if arch is None:
        return {}
    out = {}
    for name, module in sb.model.named_modules():
        pos = block_position(sb.blocks_path, name)
        if pos is None:
            continue
        idx, tail = pos
        if tail == arch.attention_readout:
            out[(idx, "heads")] = module
        elif tail == arch.ffn_readout:
            out[(idx, "neurons")] = module
    return out


def subnetwork_attribution(model, concept: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           top: int = 5) -> dict[str, Any]:
    """Per block: the ``top`` heads and FFN neurons with the largest |activation × gradient| for ``concept``.

    Args:
        model: A ``ConceptBottleneckModel`` with a :class:`SubnetworkBackbone`.
        concept: Concept index.
        input_ids, attention_mask: One example (batch of 1).

    Returns:
        ``{"concept", "value", "blocks": {block: {"heads": [[index, score], ...], "neurons": [...],
        "heads_kept": n, "neurons_kept": n}}}``.
    """
    sb = model.backbone
    if not isinstance(sb, SubnetworkBackbone):
        return {}
    modules = _readout_modules(sb)
    if not modules:
        return {"note": f"unit attribution is not available for model type {sb.model.config.model_type}"}
    captured: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for key, module in modules.items():
        def pre(mod, args, key=key):
            x = args[0]
            x.retain_grad()
            captured[key] = x
        hooks.append(module.register_forward_pre_hook(pre))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model.single_concept_logits(concept, input_ids, attention_mask)
            value = int(logits.argmax(-1)[0])
            logits[0, value].backward()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    n_heads = sb.model.config.num_attention_heads
    blocks: dict[str, dict[str, Any]] = {}
    for (block, kind), x in sorted(captured.items()):
        contrib = (x * x.grad).detach()[0].sum(0)  # [features], summed over tokens
        if kind == "heads":
            contrib = contrib.view(n_heads, -1).sum(1)
        scores = contrib.abs()
        kept = int((x.detach()[0].abs().sum(0).view(n_heads, -1).sum(1) if kind == "heads"
                    else x.detach()[0].abs().sum(0)).gt(0).sum())
        k = min(top, scores.numel())
        vals, idx = scores.topk(k)
        entry = blocks.setdefault(str(block), {})
        entry[kind] = [[int(i), round(float(v), 6)] for i, v in zip(idx, vals) if v > 0]
        entry[f"{kind}_kept"] = kept
        entry[f"{kind}_total"] = int(scores.numel())
    return {"concept": model.concepts.names[concept], "value": value, "blocks": blocks}


def subnetwork_summary(model, results_path=None) -> dict[str, Any] | None:
    """Model level: granularity, scorer, sparsity and ``density`` (concept -> block -> kept fraction); with
    ``results_path`` (the training run's ``results.json``) also its cross-mask matrix and specificity."""
    import json
    from pathlib import Path

    from sparsecbm.sparsity.subnetwork_stats import subnetwork_stats

    sb = model.backbone
    if not isinstance(sb, SubnetworkBackbone):
        return None
    stats = subnetwork_stats(sb, model.concepts.names)
    density = {c: {b: round(1 - v, 4) for b, v in s["per_layer"].items()} for c, s in stats["concepts"].items()}
    out = {"granularity": stats["granularity"], "scorer": stats["scorer"], "target_sparsity": stats["target_sparsity"],
           "concept_specific": stats["concept_specific"], "density": density, "jaccard": stats["jaccard"]}
    if results_path is not None and Path(results_path).is_file():
        saved = json.loads(Path(results_path).read_text()).get("subnetworks") or {}
        if saved.get("cross_mask"):
            out["cross_mask"], out["specificity"] = saved["cross_mask"], saved.get("specificity")
    return out


def example_subnetworks(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, summary: dict | None,
                        top: int = 5, units: bool = True) -> dict[str, Any] | None:
    """Example level: the model's ``density`` plus (``units``) per concept the heads/neurons that mattered
    most here."""
    if summary is None:
        return None
    if not units:
        return {"density": summary["density"]}
    real = attention_mask[0].bool()
    ids, mask = input_ids[:, real], attention_mask[:, real]
    units = {model.concepts.names[k]: subnetwork_attribution(model, k, ids, mask, top)
             for k in range(len(model.concepts))}
    return {"density": summary["density"], "units": units}
