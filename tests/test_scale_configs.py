"""GPU/multi-node configs compose and build their strategies on CPU (they only run with GPUs)."""

from __future__ import annotations

import torch
from hydra.utils import instantiate

from sparsecbm.models.backbone import Backbone
from sparsecbm.scale import block_policy, is_block


def test_ddp_and_fsdp_configs(cfg_factory):
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    ddp = cfg_factory(["trainer=ddp"]).trainer
    assert ddp.accelerator == "gpu" and ddp.precision == "bf16-mixed" and not ddp.use_distributed_sampler
    strategy = instantiate(ddp.strategy)
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs["broadcast_buffers"] is False
    cpu = cfg_factory(["trainer=ddp_cpu"]).trainer
    assert (cpu.accelerator, cpu.devices, cpu.precision, cpu.strategy.process_group_backend) == ("cpu", 2, "32-true", "gloo")
    fsdp = cfg_factory(["trainer=fsdp", "trainer.precision=bf16-true", "trainer.strategy.activation_checkpointing=true"])
    strategy = instantiate(fsdp.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and fsdp.trainer.precision == "bf16-true"
    assert strategy.kwargs["use_orig_params"] is True
    real = cfg_factory(["backbone=qwen2_0_5b"]).backbone
    assert (real.dtype, real.pooling, real.gradient_checkpointing, real.lora.r) == ("bfloat16", "last", True, 16)


def test_fsdp_units_are_the_transformer_blocks():
    torch.manual_seed(0)
    bb = Backbone("minilm", pretrained=False, lora={"r": 2}, config={
        "model_type": "llama", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 3,
        "num_attention_heads": 2, "intermediate_size": 32})
    units = [name for name, m in bb.model.named_modules() if is_block(m)]
    assert units == ["layers.0", "layers.1", "layers.2"]
    policy = block_policy()
    assert policy(module=bb.model.layers[1], recurse=False, nonwrapped_numel=0)
    assert not policy(module=bb.model.embed_tokens, recurse=False, nonwrapped_numel=0)


def test_bf16_mixed_on_cpu_trains_a_step(cfg_factory):
    """The masked layers under bf16 autocast (what trainer=gpu/ddp/fsdp use), here on the CPU."""
    from sparsecbm.train import build

    cfg = cfg_factory(["experiment=smoke", "backbone=tiny_bert", "sparsity=magnitude", "+trainer.precision=bf16-mixed",
                       "+trainer.max_steps=1", "+trainer.limit_val_batches=0", "callbacks.model_checkpoint=null"])
    dm, module, trainer = build(cfg)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 1 and trainer.precision == "bf16-mixed"
