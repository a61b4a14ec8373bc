"""LoRA adapters (peft) on a backbone's Hugging Face model, and how they meet the concept masks.

With ``backbone.lora`` set, peft's LoRA layers are injected into the model in place (no
``PeftModel`` wrapper, so the backbone code sees the same module tree) and every pre-trained
weight is frozen: only the ``lora_A``/``lora_B`` matrices of the backbone train, with the concept
and label heads.

Concept masks and LoRA (``sparsity=...`` on top): a LoRA-adapted Linear computes
``base_layer(x) + B A x · scaling``. The injector wraps the *frozen base layer inside* it, so concept
``k`` computes with ``W ⊙ M_k + B A``: the masks cover the frozen pre-trained weights of every
masked Linear, the LoRA adapters stay dense and are shared by all concepts. Structured
granularities (``neuron``/``head``) refuse LoRA on the layers they gather.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}


def lora_targets(model_type: str, target_modules: str | Sequence[str] | None) -> str | list[str]:
    """The modules to adapt: ``target_modules`` as given, else peft's default for the model family."""
    if target_modules:
        return target_modules if isinstance(target_modules, str) else list(target_modules)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if model_type not in DEFAULTS:
        raise ValueError(
            f"backbone.lora: peft has no default LoRA target modules for model type '{model_type}'; set "
            "backbone.lora.target_modules to the names of its attention Linear layers "
            "(e.g. backbone.lora.target_modules=[q_proj,v_proj]) or a regex over module names"
        )
    return list(DEFAULTS[model_type])


def add_lora(model: nn.Module, lora: Mapping[str, Any]) -> nn.Module:
    """Inject LoRA adapters into ``model`` in place and freeze everything else.

    Args:
        model: A Hugging Face model (``AutoModel``).
        lora: ``{r, alpha, dropout, target_modules}``; missing keys take :data:`LORA_DEFAULTS`.

    Returns:
        The same model, with only the ``lora_`` parameters trainable.
    """
    from peft import LoraConfig, inject_adapter_in_model

    unknown = set(lora) - set(LORA_DEFAULTS)
    if unknown:
        raise ValueError(f"backbone.lora: unknown settings {sorted(unknown)}; expected {sorted(LORA_DEFAULTS)}")
    opts = {**LORA_DEFAULTS, **dict(lora)}
    config = LoraConfig(
        r=int(opts["r"]),
        lora_alpha=float(opts["alpha"]),
        lora_dropout=float(opts["dropout"]),
        target_modules=lora_targets(model.config.model_type, opts["target_modules"]),
        bias="none",
    )
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def is_lora_layer(module: nn.Module) -> bool:
    """A peft LoRA layer (holding ``base_layer`` plus ``lora_A``/``lora_B``)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, LoraLayer)
