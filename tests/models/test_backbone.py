"""Backbones: pooling modes, encoders and decoders, pad-token handling, padding invariance."""

from __future__ import annotations

import pytest
import torch
from testkit.backbones import TINY

from sparsecbm.models.backbone import Backbone, load_tokenizer, pool


def tiny(kind: str, pooling: str) -> Backbone:
    torch.manual_seed(0)
    return Backbone("minilm", pooling=pooling, pretrained=False, config=dict(TINY[kind])).eval()


def test_pool_by_hand():
    h = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)  # values 0..7
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    assert pool(h, mask, "mean").flatten().tolist() == [1.0, 6.0]  # (0+1+2)/3, (5+6+7)/3
    assert pool(h, mask, "cls").flatten().tolist() == [0.0, 4.0]
    assert pool(h, mask, "last").flatten().tolist() == [2.0, 7.0]  # last real token, right and left padding
    # per-concept hidden states [K, B, T, H] pool the same way
    assert pool(h.expand(3, 2, 4, 1), mask, "last").shape == (3, 2, 1)
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(h, mask, "max")


@pytest.mark.parametrize("kind,pooling", [("bert", "mean"), ("bert", "cls"), ("gpt2", "last"), ("llama", "last"), ("llama", "mean")])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_does_not_change_pooled_features(kind, pooling, side):
    if kind == "bert" and side == "left":
        pytest.skip("encoders use absolute positions and their tokenizers pad on the right")
    bb = tiny(kind, pooling)
    ids = torch.tensor([[5, 6, 7, 8]])
    alone = bb(ids, torch.ones_like(ids))
    pad = torch.zeros((1, 3), dtype=torch.long)
    padded_ids = torch.cat([ids, pad], 1) if side == "right" else torch.cat([pad, ids], 1)
    mask = (torch.cat([torch.ones(1, 4), torch.zeros(1, 3)], 1) if side == "right"
            else torch.cat([torch.zeros(1, 3), torch.ones(1, 4)], 1)).long()
    assert bb.is_decoder == (kind != "bert")
    torch.testing.assert_close(bb(padded_ids, mask), alone, atol=1e-5, rtol=1e-5)
    assert alone.shape == (1, 16)


def test_decoder_without_pad_token(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "good": 3, "food": 4, "bad": 5}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert tok.pad_token == "</s>" and tok.pad_token_id == 2
    bb = Backbone(str(tmp_path), pooling="last", pretrained=False, config=dict(TINY["gpt2"]))
    assert bb.model.config.pad_token_id == 2
    enc = tok(["good food", "bad"], padding=True, return_tensors="pt")
    assert bb(enc["input_ids"], enc["attention_mask"]).shape == (2, 16)


def test_default_minilm_loads_offline():
    bb = Backbone("minilm")
    assert bb.hidden_size == 384 and bb.model.training  # train mode: dropout is active when fitting
    assert sum(p.numel() for p in bb.parameters()) == 22_713_216
