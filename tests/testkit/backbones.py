"""Tiny randomly initialised backbone configs of each family the package supports (built offline, no hub)."""

from __future__ import annotations

TINY = {
    "bert": {"model_type": "bert", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 32},
    "gpt2": {"model_type": "gpt2", "vocab_size": 64, "n_embd": 16, "n_layer": 2, "n_head": 2,
             "bos_token_id": 1, "eos_token_id": 2},
    "llama": {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 32,
              "bos_token_id": 1, "eos_token_id": 2},
}
