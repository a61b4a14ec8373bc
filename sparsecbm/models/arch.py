"""Where things are inside each Hugging Face model family: the transformer blocks and, per block, the
Linear layers of attention heads and feed-forward neurons. The one table the sparsity code reads.

Every name is a suffix *inside one block* (``encoder.layer.3`` + ``.attention.self.query``). A family's
:class:`Units` say which layers produce a unit (its rows) and which consumes it (its columns):
structured masking gathers whole heads / neurons from them (:mod:`sparsecbm.sparsity.injector`), the
subnetwork report counts what each concept keeps of them (:mod:`sparsecbm.sparsity.subnetwork_stats`), and unit
attribution reads the consumers' inputs (:mod:`sparsecbm.sparsity.unit_attribution`).

A model type missing here still gets unstructured masks on every Linear of its blocks (found by
:func:`find_blocks`); it has no head / neuron structure, so no structured granularity and no per-head
report. Add a family by adding one :class:`Architecture`.

Example:
    >>> architecture("roberta").head.consumer
    'attention.output.dense'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

#: ``granularity=structured``: attention heads and FFN neurons together.
UNIT_KINDS = ("head", "neuron")


@dataclass(frozen=True)
class Units:
    """One kind of unit in a block: the layers whose output rows it owns and the layer whose input columns it owns."""

    producers: tuple[str, ...]
    consumer: str

    @property
    def layers(self) -> tuple[str, ...]:
        return (*self.producers, self.consumer)


@dataclass(frozen=True)
class Architecture:
    """A model family's module names.

    Attributes:
        family: A short name (``bert``, ``llama``...).
        model_types: The ``config.model_type`` values that share these names.
        head: Attention heads (query / key / value rows, output-projection columns); ``None`` when the
            projections are fused (GPT-2's ``c_attn``) so heads cannot be cut out of them.
        neuron: Feed-forward neurons (up / gate rows, down-projection columns).
        attention_readout: The layer whose input is the concatenation of the heads' outputs.
        ffn_readout: The layer whose input is the feed-forward neurons.
    """

    family: str
    model_types: tuple[str, ...]
    head: Units | None
    neuron: Units | None
    attention_readout: str
    ffn_readout: str

    def units(self, kind: str) -> Units | None:
        """The :class:`Units` of ``kind`` (``head`` or ``neuron``), ``None`` when the family has none."""
        if kind not in UNIT_KINDS:
            raise ValueError(f"unknown unit kind '{kind}'; expected one of {UNIT_KINDS}")
        return self.head if kind == "head" else self.neuron

    def role(self, name: str) -> str | None:
        """What the block-relative layer ``name`` is to the units: ``head_rows`` (a query / key / value
        projection), ``head_cols`` (the attention output projection), ``ffn`` (a feed-forward layer) or
        ``None``. A LoRA layer's frozen ``.base_layer`` answers to the LoRA layer's name."""
        name = name.removesuffix(".base_layer")
        if self.head is not None and name in self.head.producers:
            return "head_rows"
        if self.head is not None and name == self.head.consumer:
            return "head_cols"
        if self.neuron is not None and name in self.neuron.layers:
            return "ffn"
        return None


_BERT_HEAD = Units(("attention.self.query", "attention.self.key", "attention.self.value"), "attention.output.dense")
_LLAMA_HEAD = Units(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.o_proj")

#: The architecture table: one row per family.
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("bert", ("bert", "roberta", "xlm-roberta", "electra"), _BERT_HEAD,
                 Units(("intermediate.dense",), "output.dense"), "attention.output.dense", "output.dense"),
    Architecture("distilbert", ("distilbert",),
                 Units(("attention.q_lin", "attention.k_lin", "attention.v_lin"), "attention.out_lin"),
                 Units(("ffn.lin1",), "ffn.lin2"), "attention.out_lin", "ffn.lin2"),
    Architecture("llama", ("llama", "qwen2", "mistral", "qwen3"), _LLAMA_HEAD,
                 Units(("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"), "self_attn.o_proj", "mlp.down_proj"),
    Architecture("gpt2", ("gpt2",), None, Units(("mlp.c_fc",), "mlp.c_proj"), "attn.c_proj", "mlp.c_proj"),
)
_BY_TYPE = {t: a for a in ARCHITECTURES for t in a.model_types}


def architecture(model_type: str | None) -> Architecture | None:
    """The :class:`Architecture` of a ``config.model_type``, or ``None`` for a family not in the table."""
    return _BY_TYPE.get(model_type or "")


def architecture_of(model: nn.Module) -> Architecture | None:
    """The :class:`Architecture` of a Hugging Face model (by its ``config.model_type``)."""
    return architecture(getattr(getattr(model, "config", None), "model_type", None))


def supporting(kinds: Iterable[str]) -> list[str]:
    """The model types whose family has every unit kind in ``kinds`` (for error messages)."""
    kinds = list(kinds)
    return sorted(t for t, a in _BY_TYPE.items() if all(a.units(k) is not None for k in kinds))


def is_linear(m: nn.Module) -> bool:
    """An ``nn.Linear`` or GPT-2's transposed ``Conv1D``."""
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the transformer blocks (``encoder.layer``, ``h``, ``layers``...): the longest one
    whose every entry holds a Linear layer. Any family, listed in the table or not."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (best is None or len(module) > len(best[1])):
            if all(any(is_linear(m) for m in blk.modules()) for blk in module):
                best = (name, module)
    if best is None:
        raise ValueError(f"could not find transformer blocks (a ModuleList of layers) in {type(model).__name__}")
    return best


def block_position(blocks_path: str, name: str) -> tuple[int, str] | None:
    """``(block index, name inside the block)`` of a full module name under ``blocks_path``, else ``None``.

    Example:
        >>> block_position("encoder.layer", "encoder.layer.3.attention.self.query")
        (3, 'attention.self.query')
    """
    if not name.startswith(blocks_path + "."):
        return None
    idx, _, tail = name[len(blocks_path) + 1:].partition(".")
    return (int(idx), tail) if idx.isdigit() else None
