"""What each concept's subnetwork keeps: statistics, CSV, heatmap, and mask export / materialisation."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsecbm.models.arch import architecture, block_position
from sparsecbm.outputs import save_figure
from sparsecbm.sparsity.backbone import SubnetworkBackbone


def _block_of(sb: SubnetworkBackbone, layer_name: str) -> int:
    return block_position(sb.blocks_path, layer_name)[0]


def _role(sb: SubnetworkBackbone, name: str) -> str | None:
    """``head_rows`` / ``head_cols`` / ``ffn`` / ``None``: the layer's place in the architecture table."""
    arch = architecture(sb.model.config.model_type)
    pos = block_position(sb.blocks_path, name)
    return arch.role(pos[1]) if arch is not None and pos is not None else None


def _head_layout(sb: SubnetworkBackbone, name: str, layer) -> tuple[str, int, str] | None:
    """('rows'|'cols', n, 'heads'|'kv_heads') for attention projections (q/k/v rows, output columns), else None.
    Under grouped-query attention the key / value projections have ``n`` key/value heads, not query heads."""
    cfg = sb.model.config
    n_heads = getattr(cfg, "num_attention_heads", None)
    role = _role(sb, name)
    if not n_heads or role not in ("head_rows", "head_cols"):
        return None
    axis = "rows" if role == "head_rows" else "cols"
    q_size = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    n = (layer.out_features if axis == "rows" else layer.in_features) // q_size
    return axis, n, "heads" if n == n_heads else "kv_heads"


def _is_ffn(sb: SubnetworkBackbone, name: str) -> bool:
    return _role(sb, name) == "ffn"


@torch.no_grad()
def subnetwork_stats(sb: SubnetworkBackbone, concept_names: list[str]) -> dict[str, Any]:
    """Per concept: realised sparsity overall and per block, fraction of each head and FFN block kept,
    and pairwise Jaccard overlap of the kept weights per block."""
    layers = sb.masked_layers()
    blocks = sorted({_block_of(sb, n) for n in layers})
    k_names = list(concept_names)
    kept = {c: {b: 0 for b in blocks} for c in k_names}
    total = {b: 0 for b in blocks}
    heads: dict[str, dict[str, dict[int, np.ndarray]]] = {"heads": {c: {} for c in k_names},
                                                          "kv_heads": {c: {} for c in k_names}}
    head_total: dict[str, dict[int, np.ndarray]] = {"heads": {}, "kv_heads": {}}
    ffn = {c: {b: 0 for b in blocks} for c in k_names}
    ffn_total = {b: 0 for b in blocks}
    inter = {(a, b): {blk: 0 for blk in blocks} for i, a in enumerate(k_names) for b in k_names[i + 1:]}
    union = {(a, b): {blk: 0 for blk in blocks} for i, a in enumerate(k_names) for b in k_names[i + 1:]}
    for name, layer in layers.items():
        blk = _block_of(sb, name)
        masks = [layer.concept_mask(sb.mask_index(k)) for k in range(len(k_names))]
        total[blk] += masks[0].numel()
        layout = _head_layout(sb, name, layer)
        for c, m in zip(k_names, masks):
            kept[c][blk] += int(m.sum())
            if layout is not None:
                axis, n_heads, which = layout
                per_head = (m.sum(1) if axis == "rows" else m.sum(0)).view(n_heads, -1).sum(1).double().cpu().numpy()
                heads[which][c][blk] = heads[which][c].get(blk, 0) + per_head
            elif _is_ffn(sb, name):
                ffn[c][blk] += int(m.sum())
        if layout is not None:
            axis, n_heads, which = layout
            size = masks[0].numel() // n_heads
            head_total[which][blk] = head_total[which].get(blk, 0) + np.full(n_heads, size, dtype=float)
        elif _is_ffn(sb, name):
            ffn_total[blk] += masks[0].numel()
        for a, b in inter:
            ma, mb = masks[k_names.index(a)], masks[k_names.index(b)]
            inter[(a, b)][blk] += int((ma & mb).sum())
            union[(a, b)][blk] += int((ma | mb).sum())
    concepts = {}
    for c in k_names:
        all_kept = sum(kept[c].values())
        concepts[c] = {
            "sparsity": 1 - all_kept / max(sum(total.values()), 1),
            "per_layer": {str(b): 1 - kept[c][b] / max(total[b], 1) for b in blocks},
            # per query head: the kept fraction of its own weights (query rows, output columns)
            "heads_kept": {str(b): (heads["heads"][c][b] / head_total["heads"][b]).round(4).tolist()
                           for b in heads["heads"][c]},
            # grouped-query attention only: per key/value head, the kept fraction of its key / value rows
            **({"kv_heads_kept": {str(b): (heads["kv_heads"][c][b] / head_total["kv_heads"][b]).round(4).tolist()
                                  for b in heads["kv_heads"][c]}} if heads["kv_heads"][c] else {}),
            "ffn_kept": {str(b): ffn[c][b] / ffn_total[b] for b in blocks if ffn_total[b]},
        }
    jaccard = {f"{a}|{b}": {str(blk): inter[(a, b)][blk] / max(union[(a, b)][blk], 1) for blk in blocks}
               for a, b in inter}
    from sparsecbm.sparsity.scorers import make_scorer

    mean_jaccard = {str(blk): float(np.mean([v[str(blk)] for v in jaccard.values()])) for blk in blocks} if jaccard else {}
    return {
        "granularity": sb.granularity,
        "scorer": sb.settings["scorer"].get("name"),
        # False: one concept-independent ranking (magnitude), so every concept has the same subnetwork
        "concept_specific": bool(make_scorer(sb.settings["scorer"]).concept_specific) and not sb.shared,
        "target_sparsity": round(float(sb.mask_level), 6),  # the selected checkpoint's level (float32 buffer)
        "final_sparsity": sb.final_sparsity,
        "mean_jaccard": mean_jaccard,
        "masked_blocks": blocks,
        "masked_params": sum(total.values()),
        "mask_bytes": sb.mask_bytes(),
        "concepts": concepts,
        "jaccard": jaccard,
    }


def write_reports(stats: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """``subnetworks.csv`` (concept x layer) and ``subnetworks.png`` (heatmap of kept fraction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    concepts = list(stats["concepts"])
    blocks = [str(b) for b in stats["masked_blocks"]]
    csv_path = out_dir / "subnetworks.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["concept", "layer", "sparsity", "ffn_kept", "heads_kept", "mean_jaccard_with_others"])
        for c in concepts:
            s = stats["concepts"][c]
            for b in blocks:
                others = [v[b] for key, v in stats["jaccard"].items() if c in key.split("|")]
                w.writerow([c, b, round(s["per_layer"][b], 6), s["ffn_kept"].get(b, ""),
                            json.dumps(s["heads_kept"].get(b, "")), round(float(np.mean(others)), 6) if others else ""])
    grid = np.array([[1 - stats["concepts"][c]["per_layer"][b] for b in blocks] for c in concepts])
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(blocks), 0.8 + 0.45 * len(concepts)))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(blocks)), [f"L{b}" for b in blocks])
    ax.set_yticks(range(len(concepts)), concepts)
    for i in range(len(concepts)):
        for j in range(len(blocks)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w" if grid[i, j] < 0.6 else "k", fontsize=8)
    ax.set_title(f"fraction of weights kept ({stats['granularity']}, {stats['scorer']})")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return {"csv": csv_path, "png": save_figure(fig, out_dir / "subnetworks.png")}


def export_masks(sb: SubnetworkBackbone, concept_names: list[str], path: str | Path) -> Path:
    """Bit-packed masks in a safetensors file: one uint8 tensor per (concept, layer), shapes in metadata."""
    from safetensors.torch import save_file

    tensors, shapes = {}, {}
    for name, layer in sb.masked_layers().items():
        for k, c in enumerate(concept_names):
            m = layer.concept_mask(sb.mask_index(k)).contiguous().cpu().numpy()
            key = f"{c}/{name}"
            tensors[key] = torch.from_numpy(np.packbits(m.reshape(-1)))
            shapes[key] = list(m.shape)
    meta = {"format": "sparsecbm-masks-v1", "shapes": json.dumps(shapes), "concepts": json.dumps(list(concept_names)),
            "settings": json.dumps(sb.settings)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_masks(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Inverse of :func:`export_masks`: ``{concept: {layer: bool mask [out, in]}}``."""
    from safetensors import safe_open

    out: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as f:
        shapes = json.loads(f.metadata()["shapes"])
        for key in f.keys():
            concept, layer = key.split("/", 1)
            shape = shapes[key]
            bits = np.unpackbits(f.get_tensor(key).numpy())[: int(np.prod(shape))]
            out.setdefault(concept, {})[layer] = torch.from_numpy(bits.astype(bool).reshape(shape))
    return out


@torch.no_grad()
def materialize(sb: SubnetworkBackbone, concept: int):
    """A standalone Hugging Face model equal to concept ``concept``'s subnetwork (pruned weights are 0).

    Structured units are zeroed including their bias, so the result computes exactly what the
    subnetwork computes; save it with ``save_pretrained``.
    """
    from sparsecbm.sparsity.injector import remove

    k = sb.mask_index(concept)
    masks = {n: (layer.concept_mask(k).clone(), layer.role, layer.rows_kept(k).clone() if layer.role == "producer" else None)
             for n, layer in sb.masked_layers().items()}
    sb.remove_branch_hooks()
    try:
        model = copy.deepcopy(sb.model)
    finally:
        sb.add_branch_hooks()
    remove(model)
    modules = dict(model.named_modules())
    for name, (mask, role, rows) in masks.items():
        layer = modules[name]
        transposed = not isinstance(layer, torch.nn.Linear)
        w = layer.weight
        w.mul_((mask.t() if transposed else mask).to(w.dtype))
        if role == "producer" and layer.bias is not None:
            layer.bias.mul_(rows.to(layer.bias.dtype))
    return model
