"""Attention modules whose heads are gathered per concept (``granularity=head|structured``).

The batched gathered pass (:mod:`sparsecbm.sparsity.layers`) hands an attention module only each concept's kept
heads. Whatever the module assumes about its head count is set for that pass by :class:`GatheredAttention`, a
forward pre-hook the injector registers (and removes with the masks), and put back afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsecbm.sparsity.layers import SubnetworkState, UnitGroup


class GatheredAttention:
    """Forward pre-hook of an attention module whose heads are gathered (``granularity=head|structured``).

    In the gathered batched pass the module sees only each concept's kept heads, so what it assumes about
    the head count is set per pass (and put back for every other pass):

    * grouped-query attention: every kept query head brings its own key/value head, so
      ``num_key_value_groups`` is 1 (the module's ``kv_groups`` otherwise);
    * ``all_head_size`` (MPNet reshapes its output with it): the gathered width;
    * a per-head score bias argument (``bias``: name and position, MPNet's ``position_bias [B, heads, T, T]``):
      each concept's slice of the batch reads the rows of its own kept heads (padding slots read any row:
      their values are 0).
    """

    def __init__(self, state: SubnetworkState, group: UnitGroup, bias: tuple[str, int] | None = None):
        self.state, self.group, self.bias = state, group, bias

    def restore(self, module: nn.Module) -> None:
        """The module's own head layout (every head, its own grouping)."""
        if self.group.kv_groups > 1:
            module.num_key_value_groups = self.group.kv_groups
        if hasattr(module, "all_head_size"):
            module.all_head_size = self.group.n_units * self.group.unit_size

    def after(self, module: nn.Module, args: tuple, output) -> None:
        """Forward hook: the module's own layout again once the pass is done (readers outside a pass)."""
        self.restore(module)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        if not (self.state.mode == "batched" and self.state.compact):
            self.restore(module)
            return None
        idx, _ = self.group.row_index()
        if self.group.kv_groups > 1:
            module.num_key_value_groups = 1
        if hasattr(module, "all_head_size"):
            module.all_head_size = idx.shape[1]
        if self.bias is None:
            return None
        name, position = self.bias
        in_kwargs = name in kwargs
        bias = kwargs.get(name) if in_kwargs else (args[position] if len(args) > position else None)
        if bias is None:
            return None
        n = self.state.n_masks
        heads = idx[:, :: self.group.unit_size] // self.group.unit_size  # [K, kept heads (padded)]
        per = bias.reshape(n, bias.shape[0] // n, *bias.shape[1:])
        gathered = torch.stack([per[k].index_select(1, heads[k]) for k in range(n)])
        gathered = gathered.reshape(bias.shape[0], heads.shape[1], *bias.shape[2:])
        if in_kwargs:
            return args, {**kwargs, name: gathered}
        return (*args[:position], gathered, *args[position + 1:]), kwargs
