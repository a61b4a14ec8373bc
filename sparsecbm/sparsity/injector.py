"""Find the transformer blocks of a Hugging Face model and wrap their Linear layers (peft-style).

``target_modules`` follows peft: a list of module-name suffixes, or one regex matched against
the full module name. By default every Linear inside the transformer blocks is wrapped
(attention projections and feed-forward), never embeddings or heads. In a model with LoRA
adapters the frozen ``base_layer`` inside each LoRA layer is wrapped (it answers to the LoRA
layer's name); the adapters themselves are never masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from sparsecbm.models.arch import UNIT_KINDS, architecture, find_blocks, is_linear, supporting
from sparsecbm.sparsity.attention import GatheredAttention
from sparsecbm.sparsity.layers import MaskedLinear, SubnetworkState, UnitGroup

__all__ = ["find_blocks", "group_module_name", "inject", "remove", "resolve_layers"]

# the blocks and the head / neuron layers of each family: one table, sparsecbm.models.arch
STRUCTURED_KINDS = UNIT_KINDS  # granularity=structured: heads and neurons together (every projection skips compute)


def resolve_layers(masked_layers: Sequence[int] | None, n_blocks: int) -> list[int]:
    """Block indices to mask; negative indices count from the top (``[-2, -1]`` = the last two)."""
    if masked_layers is None:
        return list(range(n_blocks))
    out = []
    for i in masked_layers:
        j = int(i) + n_blocks if int(i) < 0 else int(i)
        if not 0 <= j < n_blocks:
            raise ValueError(f"sparsity.masked_layers: block {i} does not exist; the model has blocks 0..{n_blocks - 1}")
        out.append(j)
    return sorted(set(out))


def _matches(name: str, target_modules) -> bool:
    name = name.removesuffix(".base_layer")  # the frozen layer inside a LoRA layer answers to the LoRA layer's name
    if target_modules is None:
        return True
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def inject(
    model: nn.Module,
    state: SubnetworkState,
    granularity: str = "unstructured",
    target_modules: str | Sequence[str] | None = None,
    masked_layers: Sequence[int] | None = None,
) -> dict:
    """Replace the chosen Linear layers of ``model`` by :class:`MaskedLinear` in place.

    Returns ``{"blocks_path", "blocks": [indices], "layers": {name: MaskedLinear}, "groups": {name: UnitGroup}}``.
    """
    blocks_path, blocks = find_blocks(model)
    chosen = resolve_layers(masked_layers, len(blocks))
    layers: dict[str, MaskedLinear] = {}
    groups: dict[str, UnitGroup] = {}
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    for b in chosen:
        block = blocks[b]
        prefix = f"{blocks_path}.{b}"
        if granularity == "unstructured":
            for name, module in list(block.named_modules()):
                full = f"{prefix}.{name}"
                # LoRA: the base layer inside a LoRA layer is masked, its lora_A/lora_B stay dense
                if name and is_linear(module) and "lora_" not in name and _matches(full, target_modules):
                    _replace(block, name, MaskedLinear(module, state, "weights"))
                    layers[full] = _get(block, name)
            continue
        arch = architecture(model_type)
        kinds = STRUCTURED_KINDS if granularity == "structured" else (granularity,)
        for kind in kinds:
            spec = arch.units(kind) if arch is not None else None
            if spec is None:
                supported = supporting(kinds)
                raise ValueError(
                    f"sparsity.granularity={granularity} is supported for {supported}, not '{model_type}' "
                    f"(no {kind} structure known); use granularity=unstructured for this model"
                )
            _wrap_units(model, block, prefix, kind, spec, state, layers, groups, arch.head_bias)
    if not layers:
        raise ValueError(f"sparsity.target_modules={target_modules} matched no Linear layer in blocks {chosen}")
    return {"blocks_path": blocks_path, "blocks": chosen, "layers": layers, "groups": groups, "n_blocks": len(blocks)}


def _wrap_units(model, block, prefix, kind, spec, state, layers, groups, head_bias: str | None = None) -> None:
    """One :class:`UnitGroup` of ``kind`` (head | neuron) in ``block``: its producers' rows and consumer's columns."""
    producers, consumer = spec.producers, spec.consumer
    from sparsecbm.models.lora import is_lora_layer

    adapted = [n for n in (*producers, consumer) if is_lora_layer(_get(block, n))]
    if adapted:
        raise ValueError(
            f"sparsity.granularity={kind} gathers whole units of {adapted}, which carry LoRA adapters "
            "(dense, shared): leave them out of backbone.lora.target_modules or use sparsity.granularity=unstructured"
        )
    first = _get(block, producers[0])
    out_rows = (first.weight.shape[0] if isinstance(first, nn.Linear) else first.weight.shape[1])
    if kind == "head":  # units are the query heads (producers[0] is the query projection)
        cfg = model.config
        n_heads = cfg.num_attention_heads
        n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
        group = UnitGroup(state.n_masks, n_heads, out_rows // n_heads, "head", kv_groups=n_heads // n_kv)
    else:
        group = UnitGroup(state.n_masks, out_rows, 1, "neuron")
    groups[f"{prefix}.{kind}"] = group
    block.add_module(group_module_name(kind), group)
    for p in producers:
        layer = MaskedLinear(_get(block, p), state, "producer", group)
        layer.shared_rows = group.kv_groups > 1 and layer.out_features == group.n_kv * group.unit_size
        _replace(block, p, layer)
        layers[f"{prefix}.{p}"] = layer
    _replace(block, consumer, MaskedLinear(_get(block, consumer), state, "consumer", group))
    layers[f"{prefix}.{consumer}"] = _get(block, consumer)
    if kind == "head":
        _hook_attention(block, producers[0], state, group, head_bias)
    # one unit stands for its rows in every producer and its columns in the consumer (global ranking per weight);
    # a query head's share of a GQA key/value head is 1 / kv_groups of its rows
    group.weights_per_unit = group.unit_size * (
        sum(lyr.in_features / (group.kv_groups if lyr.shared_rows else 1)
            for lyr in (layers[f"{prefix}.{p}"] for p in producers))
        + _get(block, consumer).out_features)


def _attention_of(block: nn.Module, query: str) -> nn.Module:
    """The module holding the query projection ``query`` (the attention module the heads live in)."""
    return _get(block, query.rpartition(".")[0]) if "." in query else block


def _hook_attention(block: nn.Module, query: str, state: SubnetworkState, group: UnitGroup,
                    head_bias: str | None) -> None:
    """Register :class:`GatheredAttention` on the attention module holding the query projection ``query``."""
    import inspect

    attention = _attention_of(block, query)
    if group.kv_groups > 1 and not hasattr(attention, "num_key_value_groups"):
        raise ValueError(f"granularity=head/structured on grouped-query attention needs the attention module to "
                         f"read num_key_value_groups; {type(attention).__name__} does not: use "
                         "sparsity.granularity=neuron or unstructured for this model")
    bias = None
    if head_bias:
        params = [p for p in inspect.signature(attention.forward).parameters if p != "self"]
        if head_bias not in params:
            raise ValueError(f"the architecture table names head bias '{head_bias}', which "
                             f"{type(attention).__name__}.forward does not take ({params})")
        bias = (head_bias, params.index(head_bias))
    hook = GatheredAttention(state, group, bias)
    attention.register_forward_pre_hook(hook, with_kwargs=True)
    attention.register_forward_hook(hook.after)


def group_module_name(kind: str) -> str:
    return f"mask_{kind}_group"


def _get(root: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = _get(root, parent_name) if parent_name else root
    setattr(parent, child, new)


def remove(model: nn.Module) -> None:
    """Undo :func:`inject`: put every ``base_layer`` back (masks are dropped, GQA attention regrouped)."""
    for module in list(model.modules()):
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, GatheredAttention):
                hook.restore(module)
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(getattr(hook, "__self__", None), GatheredAttention):
                del module._forward_hooks[key]
        for child_name, child in list(module.named_children()):
            if isinstance(child, MaskedLinear):
                setattr(module, child_name, child.base_layer)
            elif isinstance(child, UnitGroup):
                delattr(module, child_name)
