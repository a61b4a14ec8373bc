"""What crosses the bottleneck: one class per concept activation, each able to *read* and *write* it.

The label head of a concept-bottleneck model reads, per concept, an activation computed from the
concept head's logits (``cbm.activation``):

- :class:`Logits`: the logits themselves (what the papers feed);
- :class:`Probs`: the softmax;
- :class:`Hard`: the one-hot of the argmax (straight-through gradient in training);
- :class:`Embedding`: the probability-weighted mix of the concept's value embeddings (Concept Embedding
  Models, Espinosa Zarlenga et al. 2022).

``read`` gives the activation the model produces; ``write`` gives the activation for a concept whose
distribution is *set* to a target (an intervention), in the same space, so training (random
interventions, ``cbm.train_intervention_prob``) and inference (:mod:`sparsecbm.interpret`) share one
definition. An intervention *strategy* (:data:`STRATEGIES`) says which target is written: one value
(``hard``), a distribution (``soft``) or the dataset's true value (``ground_truth``).

How ``logits`` are written: a logit vector has a free offset that softmax ignores but a linear label
head does not, so the written vector is ``log q'`` re-centred on the mean of the model's own logits for
that example, with ``q' = (1 - eps) q + eps / C`` (``eps = LOGIT_EPS``) to keep it finite. Its softmax is
exactly ``q'``; its offset is the one the head saw for this example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOGIT_EPS = 0.01


def mix_embeddings(probs: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` distribution x ``[B, C, m]`` value embeddings -> ``[B, m]`` (the CEM mix)."""
    return torch.einsum("bc,bcm->bm", probs.to(embeddings.dtype), embeddings)


class Activation:
    """One concept activation kind. ``read``: ``[B, C]`` logits -> label-head input; ``write``: a target
    distribution ``[B, C]`` -> the label-head input that sets the concept to it."""

    name = ""

    def read(self, logits: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def write(
        self,
        target: torch.Tensor,
        logits: torch.Tensor,
        embeddings: torch.Tensor | None = None,
        eps: float = LOGIT_EPS,
    ) -> torch.Tensor:
        raise NotImplementedError


class Logits(Activation):
    name = "logits"

    def read(self, logits, embeddings=None):
        return logits

    def write(self, target, logits, embeddings=None, eps=LOGIT_EPS):
        logq = ((1.0 - eps) * target + eps / target.shape[-1]).log()
        offset = logits.detach().mean(-1, keepdim=True) - logq.mean(-1, keepdim=True)
        return (logq + offset).to(logits.dtype)


class Probs(Activation):
    name = "probs"

    def read(self, logits, embeddings=None):
        return logits.softmax(-1)

    def write(self, target, logits, embeddings=None, eps=LOGIT_EPS):
        return target.to(logits.dtype)


class Hard(Activation):
    name = "hard"

    def read(self, logits, embeddings=None):
        p = logits.softmax(-1)
        return F.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype) + p - p.detach()  # straight-through

    def write(self, target, logits, embeddings=None, eps=LOGIT_EPS):
        return F.one_hot(target.argmax(-1), target.shape[-1]).to(logits.dtype)


class Embedding(Activation):
    name = "embedding"

    def read(self, logits, embeddings=None):
        if embeddings is None:
            raise ValueError(
                "activation=embedding needs the concept embeddings, not only the logits: "
                "use model.concept_outputs(...) instead of model.concept_logits(...)"
            )
        return mix_embeddings(logits.softmax(-1), embeddings)

    def write(self, target, logits, embeddings=None, eps=LOGIT_EPS):
        if embeddings is None:
            raise ValueError("activation=embedding: an intervention needs the concept's value embeddings")
        return mix_embeddings(target, embeddings)


KINDS: dict[str, Activation] = {a.name: a for a in (Logits(), Probs(), Hard(), Embedding())}
ACTIVATIONS = tuple(KINDS)


def activation(name: str) -> Activation:
    """The activation kind called ``name`` (``logits`` | ``probs`` | ``hard`` | ``embedding``)."""
    if name not in KINDS:
        raise ValueError(f"unknown concept activation '{name}'; expected one of {ACTIVATIONS}")
    return KINDS[name]


def read_all(
    concept_logits: list[torch.Tensor], kind: str, embeddings: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Per-concept logits -> the concept part of the label head's input, concatenated over concepts."""
    act = activation(kind)
    if kind == "embedding" and embeddings is None:
        act.read(concept_logits[0], None)  # raises the explanatory error
    return torch.cat(
        [act.read(lg, None if embeddings is None else embeddings[k]) for k, lg in enumerate(concept_logits)],
        dim=-1,
    )


def edited_inputs(
    concept_logits: list[torch.Tensor],
    kind: str,
    targets: list[torch.Tensor | None],
    masks: list[torch.Tensor | None] | torch.Tensor,
    eps: float = LOGIT_EPS,
    embeddings: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Concept part of the label-head input with some concepts of some examples replaced.

    Args:
        concept_logits: Per concept ``[B, C_k]`` predicted logits.
        kind: The model's activation.
        targets: Per concept ``[B, C_k]`` target distributions, or ``None`` (not edited).
        masks: Per concept ``[B]`` bool (which examples are edited), or a ``[B, K]`` bool tensor;
            ``None`` for a concept means all examples.
        eps: See :class:`Logits`.
        embeddings: Per concept ``[B, C_k, m]`` value embeddings (``embedding`` only).
    """
    act = activation(kind)
    parts = []
    for k, lg in enumerate(concept_logits):
        emb = embeddings[k] if embeddings is not None else None
        out = act.read(lg, emb)
        target = targets[k]
        mask = masks[:, k] if isinstance(masks, torch.Tensor) else masks[k]
        if target is not None:
            new = act.write(target, lg, emb, eps)
            out = new if mask is None else torch.where(mask.unsqueeze(-1), new, out)
        parts.append(out)
    return torch.cat(parts, dim=-1)


def ground_truth_targets(values: torch.Tensor, cardinalities: list[int]) -> list[torch.Tensor]:
    """``[B, K]`` true value indices -> per concept one-hot targets ``[B, C_k]``."""
    return [F.one_hot(values[:, k], c).float() for k, c in enumerate(cardinalities)]


def random_concept_mask(
    batch: int, n_concepts: int, prob: float, generator=None, device=None
) -> torch.Tensor:
    """``[B, K]`` bool: each concept of each example is chosen with probability ``prob``."""
    return torch.rand(batch, n_concepts, generator=generator, device=device) < prob


# --- intervention strategies: which target distribution is written -------------------------------


#: What an intervention writes: one value (``hard``), a distribution (``soft``) or the true value.
STRATEGIES = ("hard", "soft", "ground_truth")
