"""Multi-GPU helpers: the FSDP strategy with one unit per transformer block.

:class:`~sparsecbm.models.backbone.Backbone` tags every transformer block; the policy below wraps
each tagged block as its own FSDP unit (whatever the model family), so a block's parameters are
gathered only while it runs. Concept masks are bool buffers of the masked layers inside the block:
FSDP shards parameters, not buffers, so every rank keeps all masks and the pruning callback keeps
them identical across ranks.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from sparsecbm.models.backbone import FSDP_UNIT


def is_block(module: nn.Module) -> bool:
    """A transformer block tagged by the backbone (the FSDP / activation-checkpointing unit)."""
    return bool(getattr(module, FSDP_UNIT, False))


def block_policy():
    """``auto_wrap_policy`` callable for FSDP: wrap every tagged transformer block."""
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    return functools.partial(lambda_auto_wrap_policy, lambda_fn=is_block)


def fsdp_strategy(sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = False,
                  cpu_offload: bool = False, **kwargs: Any):
    """Lightning's ``FSDPStrategy`` wrapping each transformer block; ``use_orig_params`` so frozen (LoRA)
    and trainable parameters can share a unit.

    Args:
        sharding_strategy: ``FULL_SHARD`` | ``SHARD_GRAD_OP`` | ``HYBRID_SHARD`` | ``NO_SHARD``.
        activation_checkpointing: Recompute every block in the backward pass.
        cpu_offload: Keep parameters on the CPU between uses.
        **kwargs: Passed to ``FSDPStrategy``.
    """
    from lightning.pytorch.strategies import FSDPStrategy

    return FSDPStrategy(
        auto_wrap_policy=block_policy(),
        activation_checkpointing_policy=block_policy() if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        cpu_offload=cpu_offload,
        use_orig_params=True,
        **kwargs,
    )
