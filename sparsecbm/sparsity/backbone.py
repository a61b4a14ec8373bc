"""A backbone in which every concept has its own sparse subnetwork of the shared weights."""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from sparsecbm.models.backbone import Backbone
from sparsecbm.sparsity.injector import _get, group_module_name, inject
from sparsecbm.sparsity.layers import MaskedLinear, SubnetworkState
from sparsecbm.sparsity.schedule import Schedule
from sparsecbm.sparsity.scorers import Scorer, make_scorer

IMPLS = ("naive", "batched")
GRANULARITIES = ("unstructured", "neuron", "head", "structured")


def _repeat_batch(obj: Any, batch: int, times: int) -> Any:
    """Repeat every tensor with ``batch`` rows (ndim >= 2) ``times`` times along dim 0, concept-major."""
    if isinstance(obj, torch.Tensor):
        if obj.dim() >= 2 and obj.shape[0] == batch:
            return obj.repeat(times, *([1] * (obj.dim() - 1)))
        return obj
    if isinstance(obj, tuple):
        return tuple(_repeat_batch(o, batch, times) for o in obj)
    if isinstance(obj, list):
        return [_repeat_batch(o, batch, times) for o in obj]
    if isinstance(obj, dict):
        return {k: _repeat_batch(v, batch, times) for k, v in obj.items()}
    return obj


class _RecomputeInForwardMode:
    """``context_fn`` for non-reentrant gradient checkpointing: a block recomputed in the backward pass
    runs in the subnetwork mode (batched / single concept k) its forward pass ran in."""

    def __init__(self, sb: SubnetworkBackbone):
        self.ref = weakref.ref(sb)  # deep copies (materialize) share it instead of copying the backbone

    def __call__(self):
        sb = self.ref()
        saved = sb._mode()

        @contextmanager
        def recompute():
            now = sb._mode()
            sb._set_mode(saved)
            try:
                yield
            finally:
                sb._set_mode(now)

        return nullcontext(), recompute()


class SubnetworkBackbone(nn.Module):
    """Wraps a :class:`~sparsecbm.models.backbone.Backbone`; ``token_states`` returns ``[K, B, T, H]``.

    Concept ``k``'s token states come from the backbone run under mask ``k``. The dense weights
    stay shared and trainable; masks are bool buffers named ``mask_*``.

    Args:
        backbone: The dense backbone (modified in place: its Linear layers get wrapped).
        n_concepts: K, the number of concepts.
        granularity: ``unstructured`` (weights) | ``neuron`` (FFN neurons) | ``head`` (attention heads)
            | ``structured`` (heads and FFN neurons: every projection of a block skips its pruned units).
        target_modules: peft-style names or a regex; ``None`` = every Linear in the chosen blocks.
        masked_layers: Block indices that get masks (negative = from the top); ``None`` = all.
            Blocks below the first masked one run once for all concepts.
        shared: One mask for all concepts (ablation): one pass, ``[B, T, H]``.
        impl: ``batched`` (default: the K subnetworks as one batched pass, structured units gathered)
            or ``naive`` (reference: K full backbone passes, masks multiplied).
        scorer: A :class:`~sparsecbm.sparsity.scorers.Scorer` (or its ``_target_`` / ``name`` mapping);
            default magnitude (the concept-independent baseline).
        schedule: A :class:`~sparsecbm.sparsity.schedule.Schedule` or its settings.
    """

    sparse = True  # what ConceptBottleneckModel.sparse reads

    def __init__(
        self,
        backbone: Backbone,
        n_concepts: int,
        granularity: str = "unstructured",
        target_modules: str | Sequence[str] | None = None,
        masked_layers: Sequence[int] | None = None,
        shared: bool = False,
        impl: str = "batched",
        scorer: Scorer | Mapping[str, Any] | None = None,
        schedule: Schedule | Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"sparsity.impl='{impl}' is not valid; expected one of {IMPLS}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"sparsity.granularity='{granularity}' is not valid; expected one of {GRANULARITIES}")
        self.backbone = backbone
        self.n_concepts, self.shared, self.impl, self.granularity = int(n_concepts), bool(shared), impl, granularity
        self.state = SubnetworkState(n_masks=1 if shared else int(n_concepts))
        self.settings = {
            "granularity": granularity,
            "target_modules": list(target_modules) if isinstance(target_modules, (list, tuple)) else target_modules,
            "masked_layers": list(masked_layers) if masked_layers is not None else None,
            "shared": self.shared,
            "impl": impl,
            "scorer": make_scorer(scorer).config(),
            "schedule": Schedule.from_settings(schedule).to_dict(),
        }
        info = inject(backbone.model, self.state, granularity, target_modules, masked_layers)
        self.blocks_path, self.blocks = info["blocks_path"], info["blocks"]
        self.layer_names = list(info["layers"])
        self.group_names = list(info["groups"])
        self.n_blocks = info["n_blocks"]
        self._batch: int | None = None
        self.register_buffer("mask_level", torch.zeros(()))  # the sparsity the masks were last set to
        self._hooks: list = []
        self.add_branch_hooks()
        from sparsecbm.models.backbone import enable_checkpointing, is_checkpointing

        if is_checkpointing(backbone.model):
            enable_checkpointing(backbone.model, {"use_reentrant": False, "context_fn": _RecomputeInForwardMode(self)})
        self.hidden_size, self.pooling = backbone.hidden_size, backbone.pooling
        self.name_or_path, self.tokenizer_name = backbone.name_or_path, backbone.tokenizer_name
        self.lora = getattr(backbone, "lora", None)

    # ------------------------------------------------------------------ access
    @property
    def model(self) -> nn.Module:
        """The Hugging Face model (with masked layers inside)."""
        return self.backbone.model

    def masked_layers(self) -> dict[str, MaskedLinear]:
        return {n: _get(self.backbone.model, n) for n in self.layer_names}

    def unit_groups(self) -> dict:
        out = {}
        for n in self.group_names:
            block, kind = n.rsplit(".", 1)
            out[n] = _get(self.backbone.model, f"{block}.{group_module_name(kind)}")
        return out

    def mask_targets(self) -> dict:
        """What the masks live on: the masked layers (unstructured) or the unit groups (structured)."""
        return self.masked_layers() if self.granularity == "unstructured" else self.unit_groups()

    @property
    def schedule(self) -> Schedule:
        return Schedule.from_settings(self.settings["schedule"])

    @property
    def final_sparsity(self) -> float:
        return float(self.schedule.final_sparsity)

    def at_final_sparsity(self) -> bool:
        return abs(float(self.mask_level) - self.final_sparsity) < 1e-6

    def mask_index(self, concept: int) -> int:
        return 0 if self.shared else int(concept)

    # ----------------------------------------------------------------- forward
    def add_branch_hooks(self) -> None:
        """From the first masked block on, the batch is replicated once per concept (batched impl)."""
        blocks = _get(self.backbone.model, self.blocks_path)
        self._hooks = [blocks[i].register_forward_pre_hook(self._branch_hook, with_kwargs=True)
                       for i in range(self.blocks[0], self.n_blocks)]

    def remove_branch_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _mode(self) -> tuple:
        return self.state.mode, self.state.active, self._batch

    def _set_mode(self, mode: tuple) -> None:
        self.state.mode, self.state.active, self._batch = mode

    def _branch_hook(self, module, args, kwargs):
        if self._batch is None:
            return None
        times = self.state.n_masks
        return _repeat_batch(args, self._batch, times), _repeat_batch(kwargs, self._batch, times)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[K, B, T, H]`` (``[B, T, H]`` when ``shared``)."""
        n = self.state.n_masks
        if n == 1:
            self.state.mode, self.state.active = "single", 0
            states = self.backbone.token_states(input_ids, attention_mask)
            return states if self.shared else states.unsqueeze(0)
        if self.impl == "naive":
            return torch.stack([self.concept_states(k, input_ids, attention_mask) for k in range(n)])
        self.state.mode, self._batch = "batched", input_ids.shape[0]
        try:
            states = self.backbone.token_states(input_ids, attention_mask)
        finally:
            self.state.mode, self._batch = "single", None
        return states.view(n, input_ids.shape[0], *states.shape[1:])

    def concept_states(self, concept: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states ``[B, T, H]`` of one concept's subnetwork (a full single pass)."""
        self.state.mode, self.state.active = "single", self.mask_index(concept)
        return self.backbone.token_states(input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from sparsecbm.models.backbone import pool

        return pool(self.token_states(input_ids, attention_mask), attention_mask, self.pooling)

    @contextmanager
    def reuse_unmasked_blocks(self):
        """Inside the block, every pass must be on the same input (one example): the blocks below the first
        masked one (the same for every concept and mask) run on the first pass, batched or single, and their
        recorded outputs are replayed on later passes. A prediction, the mask edits that follow it and the
        re-prediction then pay for the lower blocks once. Nested uses share the outer recording."""
        first = min(self.blocks) if self.blocks else 0
        if first == 0 or getattr(self, "_replaying", False):
            yield
            return
        blocks = _get(self.backbone.model, self.blocks_path)
        recorded: dict[int, Any] = {}

        inputs: dict[int, Any] = {}

        def replay(i: int, forward):
            def run(*args, **kwargs):
                hidden = args[0] if args else kwargs.get("hidden_states")
                if i not in recorded:
                    inputs[i] = hidden.detach().clone() if isinstance(hidden, torch.Tensor) else hidden
                    with torch.no_grad():
                        recorded[i] = forward(*args, **kwargs)  # no graph: nothing below is masked
                    return recorded[i]
                before = inputs[i]
                if getattr(hidden, "shape", None) != getattr(before, "shape", None):
                    raise ValueError(f"reuse_unmasked_blocks: block {i} recorded an input of shape "
                                     f"{tuple(before.shape)} and got {tuple(hidden.shape)}; every pass inside must be "
                                     "on the same example")
                if isinstance(hidden, torch.Tensor) and not torch.equal(hidden, before):
                    # same shape, other values: another example of the same length (or dropout in train mode)
                    raise ValueError(f"reuse_unmasked_blocks: block {i} got another input than the one it recorded "
                                     f"(same shape {tuple(hidden.shape)}); every pass inside must be on the same "
                                     "example, in eval mode")
                return recorded[i]
            return run

        lower = [blocks[i] for i in range(first)]
        own = [block.__dict__.get("forward") for block in lower]  # an instance-level forward, if one was set
        for i, block in enumerate(lower):
            block.forward = replay(i, block.forward)
        self._replaying = True
        try:
            yield
        finally:
            self._replaying = False
            for block, forward in zip(lower, own):
                if forward is None:
                    del block.forward  # back to the class's forward
                else:
                    block.forward = forward

    # ------------------------------------------------------------------- masks
    def concept_mask(self, layer: str, concept: int) -> torch.Tensor:
        return self.masked_layers()[layer].concept_mask(self.mask_index(concept))

    def sparsity(self) -> dict[str, float]:
        """Realised fraction of pruned weights per concept over all masked layers."""
        out = {}
        layers = self.masked_layers()
        for k in range(self.n_concepts):
            pruned = total = 0
            for layer in layers.values():
                m = layer.concept_mask(self.mask_index(k))
                pruned += int((~m).sum())
                total += m.numel()
            out[k] = pruned / max(total, 1)
        return out

    def mask_bytes(self) -> int:
        """Bytes held by masks (bool buffers)."""
        return sum(b.numel() * b.element_size() for n, b in self.named_buffers() if n.split(".")[-1].startswith("mask_"))
