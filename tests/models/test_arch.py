"""The architecture table: every family's block and module names exist, with matching shapes, in a tiny
random model of that family; lookups by model type; structured masks on the family the table adds."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from sparsecbm.models.arch import (
    ARCHITECTURES,
    architecture,
    architecture_of,
    block_position,
    find_blocks,
    supporting,
)
from sparsecbm.models.backbone import Backbone

LLAMA_LIKE = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64}
BERT_LIKE = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 64}
#: One tiny random config per model type in the table (built offline, no download).
TINY = {
    "bert": BERT_LIKE, "roberta": {**BERT_LIKE, "pad_token_id": 1}, "xlm-roberta": {**BERT_LIKE, "pad_token_id": 1},
    "electra": {**BERT_LIKE, "embedding_size": 16},
    "distilbert": {"vocab_size": 64, "dim": 16, "n_layers": 2, "n_heads": 2, "hidden_dim": 32,
                   "max_position_embeddings": 64},
    "mpnet": {**BERT_LIKE, "pad_token_id": 1},
    "llama": LLAMA_LIKE, "qwen2": LLAMA_LIKE, "mistral": LLAMA_LIKE, "qwen3": {**LLAMA_LIKE, "head_dim": 8},
    "gemma": {**LLAMA_LIKE, "head_dim": 8}, "gemma2": {**LLAMA_LIKE, "head_dim": 8, "query_pre_attn_scalar": 8},
    "gemma3_text": {**LLAMA_LIKE, "head_dim": 8, "query_pre_attn_scalar": 8},
    "gpt2": {"vocab_size": 64, "n_embd": 16, "n_layer": 2, "n_head": 2, "n_positions": 64},
}
BLOCKS = {"bert": "encoder.layer", "mpnet": "encoder.layer", "distilbert": "transformer.layer", "llama": "layers",
          "gpt2": "h"}


def tiny_model(model_type: str) -> nn.Module:
    torch.manual_seed(0)
    return AutoModel.from_config(AutoConfig.for_model(model_type, **TINY[model_type]))


def _get(root: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _features(layer: nn.Module) -> tuple[int, int]:
    """(in, out) of a Linear or GPT-2's transposed Conv1D."""
    w = layer.weight
    return (w.shape[1], w.shape[0]) if isinstance(layer, nn.Linear) else (w.shape[0], w.shape[1])


def test_every_model_type_of_the_table_has_a_tiny_model_here():
    assert sorted(TINY) == sorted(t for a in ARCHITECTURES for t in a.model_types)


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_table_names_exist_with_matching_shapes(model_type):
    model = tiny_model(model_type)
    arch = architecture_of(model)
    assert arch is architecture(model_type) and model_type in arch.model_types
    path, blocks = find_blocks(model)
    assert path == BLOCKS[arch.family] and len(blocks) == 2
    block = blocks[1]
    hidden = model.config.hidden_size
    for kind in ("head", "neuron"):
        units = arch.units(kind)
        if units is None:
            continue
        outs = {_features(_get(block, p))[1] for p in units.producers}
        consumer_in, consumer_out = _features(_get(block, units.consumer))
        # every producer's rows are the consumer's columns (one unit = rows there, columns here)
        assert outs == {consumer_in} and consumer_out == hidden
    for readout in (arch.attention_readout, arch.ffn_readout):
        assert isinstance(_get(block, readout), nn.Module)
    assert _features(_get(block, arch.attention_readout))[1] == hidden
    # the role of every Linear the table names; a LoRA base layer answers to its layer's name
    if arch.head is not None:
        assert arch.role(arch.head.producers[0]) == "head_rows"
        assert arch.role(arch.head.consumer + ".base_layer") == "head_cols"
    assert arch.role(arch.neuron.consumer) == "ffn" and arch.role("no.such.layer") is None


def test_lookups():
    assert architecture("roberta").family == "bert" and architecture("qwen2").family == "llama"
    assert architecture("opt") is None and architecture(None) is None  # OPT: unstructured masks only
    assert architecture("gpt2").head is None  # fused c_attn: no heads to cut out
    assert "gpt2" not in supporting(["head"]) and "gpt2" in supporting(["neuron"])
    assert supporting(["head", "neuron"]) == sorted(t for t in TINY if t != "gpt2")
    with pytest.raises(ValueError, match="unknown unit kind 'layer'"):
        architecture("bert").units("layer")
    assert block_position("encoder.layer", "encoder.layer.3.attention.self.query") == (3, "attention.self.query")
    assert block_position("encoder.layer", "embeddings.word_embeddings") is None


def test_find_blocks_needs_a_module_list_of_layers():
    with pytest.raises(ValueError, match="could not find transformer blocks"):
        find_blocks(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("model_type", ["distilbert", "mpnet"])
def test_structured_masks_on_families_the_table_adds(model_type):
    """Heads and neurons cut out of DistilBERT and MPNet blocks (batched, units gathered) compute what the naive
    per-concept passes compute, and different unit masks give different concepts' states."""
    from sparsecbm.sparsity import SubnetworkBackbone

    def build(impl):
        torch.manual_seed(0)
        bb = Backbone("minilm", pooling="mean", pretrained=False, config={"model_type": model_type, **TINY[model_type]})
        return SubnetworkBackbone(bb, 2, granularity="structured", impl=impl).eval()

    fast, naive = build("batched"), build("naive")
    assert sorted(k.rsplit(".", 1)[-1] for k in fast.unit_groups()) == ["head", "head", "neuron", "neuron"]
    g = torch.Generator().manual_seed(1)
    for group in fast.unit_groups().values():
        keep = torch.rand(group.n_units, generator=g).argsort()[: max(1, group.n_units // 2)]
        masks = torch.zeros(2, group.n_units, dtype=torch.bool)
        masks[0, keep] = True
        masks[1, torch.roll(torch.arange(group.n_units), 1)[keep]] = True
        group.set_units(masks)
    naive.load_state_dict(fast.state_dict())
    ids = torch.randint(3, 60, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    a, b = fast.token_states(ids, mask), naive.token_states(ids, mask)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[0], a[1], atol=1e-4)
