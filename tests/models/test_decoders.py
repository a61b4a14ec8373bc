"""Decoder LLM families with LoRA and concept masks: one training step, gradients, masks, bf16, checkpointing."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from sparsecbm.models.backbone import Backbone, is_checkpointing
from sparsecbm.sparsity import SubnetworkBackbone, materialize
from sparsecbm.train import build

LLAMA_LIKE = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
FAMILIES = {
    "gpt2": {"model_type": "gpt2", "vocab_size": 30522, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128},
    "opt": {"model_type": "opt", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "ffn_dim": 64, "word_embed_proj_dim": 32, "max_position_embeddings": 128},
    "llama": {"model_type": "llama", **LLAMA_LIKE},
    "qwen2": {"model_type": "qwen2", **LLAMA_LIKE},
    "mistral": {"model_type": "mistral", **LLAMA_LIKE},
}
LORA_TARGET = {"gpt2": "c_attn", "opt": "q_proj", "llama": "q_proj", "qwen2": "q_proj", "mistral": "q_proj"}


def decoder_cfg(cfg_factory, family: str, *extra: str):
    cfg = cfg_factory(["experiment=smoke", "backbone=tiny_decoder", "sparsity=magnitude",
                       "sparsity.schedule.final_sparsity=0.5", "sparsity.schedule.unit=step",
                       "sparsity.schedule.start=0", "sparsity.schedule.end=0",  # prune before the first step
                       "+trainer.max_steps=1", "+trainer.limit_val_batches=0", "callbacks.model_checkpoint=null",
                       *extra])
    with open_dict(cfg):
        cfg.backbone.config = FAMILIES[family]
    return cfg




@pytest.mark.parametrize("family", list(FAMILIES))
def test_decoder_lora_masks_one_step(cfg_factory, family):
    import lightning as L

    dm, module, trainer = build(decoder_cfg(cfg_factory, family))
    sb = module.model.backbone
    assert isinstance(sb, SubnetworkBackbone) and sb.backbone.is_decoder and sb.pooling == "last"
    # masks wrap the frozen base layer inside each LoRA layer; the adapters are never masked
    lora_masked = [n for n in sb.layer_names if n.endswith(f"{LORA_TARGET[family]}.base_layer")]
    assert lora_masked and not [n for n in sb.layer_names if "lora_" in n]
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    seen: set[str] = set()

    class Record(L.Callback):
        def on_after_backward(self, trainer, pl_module):
            seen.update(n for n, p in pl_module.named_parameters() if p.grad is not None)

    trainer.callbacks.append(Record())
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 1 and float(sb.mask_level) == pytest.approx(0.5)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert seen == trainable
    heads = (".concept_heads.", ".label_head.", ".token_pooler.")  # the default cem reads tokens by attention
    assert all("lora_" in n or any(h in n for h in heads) for n in trainable)
    assert any("lora_B" in n for n in trainable) and any(".concept_heads." in n for n in trainable)
    after = dict(module.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in trainable)  # base weights frozen
    assert any(not torch.equal(before[n], after[n]) for n in trainable if "lora_B" in n)  # adapters trained
    # concept k computes with W * M_k + B A: its standalone model (pruned base weights set to 0) agrees
    name = lora_masked[0]
    mask = sb.concept_mask(name, 1)
    assert 0.45 < 1 - mask.float().mean().item() < 0.55
    sb.eval()
    batch = next(iter(dm.loader("test")))
    standalone = materialize(sb, 1).eval()
    base = dict(standalone.named_modules())[name]
    w = base.weight.t() if sb.masked_layers()[name].transposed else base.weight
    assert torch.all(w[~mask] == 0) and torch.count_nonzero(w[mask]) > 0
    with torch.no_grad():
        expected = sb.concept_states(1, batch["input_ids"], batch["attention_mask"])
        got = standalone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_lora_checkpoint_round_trip(cfg_factory, tmp_path):
    from sparsecbm.checkpoint import load_model

    cfg = decoder_cfg(cfg_factory, "qwen2")
    with open_dict(cfg):
        cfg.callbacks.model_checkpoint = None  # no validation here: only the every-epoch last.ckpt
        cfg.callbacks.last_checkpoint.dirpath = str(tmp_path / "ckpt")
    dm, module, trainer = build(cfg)
    trainer.fit(module, datamodule=dm)
    again, _ = load_model(tmp_path / "ckpt" / "last.ckpt")
    assert again.backbone.lora == module.model.backbone.lora
    batch = next(iter(dm.loader("test")))
    with torch.no_grad():
        a = module.eval().model(batch["input_ids"], batch["attention_mask"])
        b = again(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(a.label_logits, b.label_logits)


def tiny_llama(**kwargs) -> Backbone:
    torch.manual_seed(0)
    return Backbone("minilm", pooling="last", pretrained=False, config=dict(FAMILIES["llama"]), **kwargs)


def test_bf16_weights_float32_features():
    bb = tiny_llama(dtype="bfloat16", lora={"r": 4})
    assert next(bb.model.embed_tokens.parameters()).dtype == torch.bfloat16
    sb = SubnetworkBackbone(bb, n_concepts=2)
    ids = torch.randint(5, 100, (2, 6))
    out = sb(ids, torch.ones_like(ids))
    assert out.shape == (2, 2, 32) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for n, p in sb.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("impl", ["batched", "naive"])
def test_gradient_checkpointing_same_gradients(impl):
    """Recomputed blocks run under the concept mask of their forward pass: gradients are unchanged."""
    grads = []
    for checkpointing in (False, True):
        sb = SubnetworkBackbone(tiny_llama(gradient_checkpointing=checkpointing, lora={"r": 4}), n_concepts=3,
                                impl=impl)
        for k, layer in enumerate(sb.masked_layers().values()):  # different masks per concept
            g = torch.Generator().manual_seed(k)
            layer.mask_weights.copy_(torch.rand(layer.mask_weights.shape, generator=g) > 0.5)
        sb.train()
        assert is_checkpointing(sb.model) == checkpointing
        ids = torch.randint(5, 100, (2, 6))
        (sb(ids, torch.ones_like(ids)) * torch.arange(3).view(3, 1, 1)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in sb.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5)


def test_bad_lora_and_pooling_settings():
    with pytest.raises(ValueError, match="no default LoRA target modules for model type 'ctrl'.*backbone.lora.target_modules"):
        Backbone("minilm", pretrained=False, pooling="last", lora={"r": 4},
                 config={"model_type": "ctrl", "vocab_size": 64, "n_embd": 16, "n_layer": 1, "n_head": 2})
    with pytest.raises(ValueError, match="unknown settings \\['rank'\\]"):
        tiny_llama(lora={"rank": 4})
    with pytest.raises(ValueError, match="pooling=cls on the decoder 'llama'"):
        Backbone("minilm", pooling="cls", pretrained=False, config=dict(FAMILIES["llama"]))
    with pytest.raises(ValueError, match="backbone.dtype='int8'"):
        tiny_llama(dtype="int8")
    with pytest.raises(ValueError, match="granularity=neuron gathers whole units.*LoRA"):
        SubnetworkBackbone(tiny_llama(lora={"target_modules": ["up_proj"]}), n_concepts=2, granularity="neuron")
