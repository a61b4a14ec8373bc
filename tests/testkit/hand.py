"""Hand-built models whose right answers are known analytically: the 4-concept CEBaB-shaped concept set, a tiny
BERT, a module whose concept logits are fixed biases and whose label reads only food, a backbone that returns
its input ids as features, a CEM module, and a loader / train-split ceiling matching the hand-built module."""

from __future__ import annotations

import numpy as np
import torch

from sparsecbm.ceiling import ConceptCeiling
from sparsecbm.concepts import ConceptSet
from sparsecbm.lit.module import CBMLitModule
from sparsecbm.models.backbone import Backbone

M = 4  # concept embedding dim of :func:`module`

CS = ConceptSet.from_config(
    [{"name": n} for n in ("food", "ambiance", "service", "noise")],
    {"column": "y", "values": ["1", "2", "3", "4", "5"]},
    values=["Negative", "Positive", "unknown"],
)
TINY = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 64}
FOOD_LOGITS = [2.0, 0.0, 0.0]  # predicted: food = Negative


def label_weights() -> torch.Tensor:
    """Only food matters: Negative -> "1", unknown -> "3", Positive -> "5" (weight 10 each)."""
    w = torch.zeros(5, 12)
    w[0, 0], w[4, 1], w[2, 2] = 10.0, 10.0, 10.0
    return w


def hand_module(activation: str = "probs", mode: str = "joint") -> CBMLitModule:
    """Concept logits are the heads' biases whatever the text; a hand-set linear label head."""
    torch.manual_seed(0)
    backbone = Backbone("minilm", "mean", pretrained=False, config=TINY, tokenizer="minilm")
    module = CBMLitModule(backbone, CS, cbm={"mode": mode, "activation": activation})
    if mode != "standard":
        with torch.no_grad():
            for k, head in enumerate(module.model.concept_heads.heads):
                head.weight.zero_()
                head.bias.copy_(torch.tensor(FOOD_LOGITS if k == 0 else [0.0, 0.0, 1.0]))
            module.model.label_head.weight.copy_(label_weights())
            module.model.label_head.bias.zero_()
    return module.eval()


class FixedBackbone(torch.nn.Module):
    """Returns the input ids as features: lets a test choose the pooled vector exactly."""

    hidden_size = 3
    pooling = "cls"

    def token_states(self, input_ids, attention_mask):
        return input_ids.float().unsqueeze(1)  # one "token" whose state is the ids

    def forward(self, input_ids, attention_mask):
        return input_ids.float()


def module(activation: str = "embedding", p: float = 0.0, **cbm) -> CBMLitModule:
    """A CEM module (concept embeddings of size :data:`M`) on :data:`TINY`; ``p``: training-time intervention rate."""
    torch.manual_seed(0)
    backbone = Backbone("minilm", "mean", pretrained=False, config=TINY, tokenizer="minilm")
    return CBMLitModule(
        backbone, CS, cbm={"activation": activation, "embedding_dim": M, "train_intervention_prob": p, **cbm}
    )


def loader(n: int = 4):
    """One batch of ``n`` texts whose true food is Positive (the rest unknown) and label "5"."""
    truth = torch.tensor([[1, 2, 2, 2]] * n)  # true food Positive, the rest unknown
    ids = torch.randint(1000, 2000, (n, 5))
    return [
        {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "concepts": truth,
            "label": torch.full((n,), 4),
        }
    ]


def train_ceiling() -> ConceptCeiling:
    """Train data where the label follows food: Negative -> "1", Positive -> "5", unknown -> "3"."""
    rng = np.random.default_rng(0)
    food = rng.integers(0, 3, 60)
    concepts = np.stack([food, *rng.integers(0, 3, (3, 60))], axis=1)
    return ConceptCeiling.fit(concepts, np.array([0, 4, 2])[food], CS.cardinalities, 5)
