"""Per-concept token attributions: one verb, one contract, every method backed by captum.

Every method answers ``method.attribute(model, batch, concept) -> [B, T]`` token scores for the
probability of concept ``concept``'s *predicted* value (higher = more important). Special tokens
and padding get score 0 and are never perturbed.

**Removal baseline** (shared by the perturbation methods, LayerIntegratedGradients and the
faithfulness metrics): a removed token is replaced by the tokenizer's ``[MASK]`` id (its pad id
when it has no mask token), keeping the attention mask and the sequence length unchanged.

Methods (``explain method=...``): ``ours`` (the model's own token gates when it has them, otherwise
LayerIntegratedGradients: on CEBaB it was the most faithful per second of the gradient methods, while
gradient x input was the least faithful of all; see docs/results/2026-12-02-explanations.md), ``gates``, ``attention``, ``gradxinput``, ``lig``, ``saliency``,
``ablation``, ``lime``, ``kernelshap``, ``shapley``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from sparsecbm.errors import ConfigError
from sparsecbm.models.cbm import ConceptBottleneckModel

CAPTUM_METHODS = ("lig", "saliency", "ablation", "lime", "kernelshap", "shapley")
METHODS = ("ours", "gates", "attention", "gradxinput", *CAPTUM_METHODS)


@dataclass
class Tokens:
    """What every method needs to know about the tokenizer: the removal id and the special ids."""

    baseline_id: int
    special_ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Tokens:
        mask = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.pad_token_id
        return cls(int(mask), tuple(int(i) for i in tokenizer.all_special_ids))

    def candidates(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` bool: real, non-special tokens (the only ones scored, removed or kept)."""
        special = torch.isin(input_ids, torch.tensor(self.special_ids, device=input_ids.device))
        return attention_mask.bool() & ~special


def concept_prob_fn(model: ConceptBottleneckModel, concept: int) -> Callable[..., torch.Tensor]:
    """``f(input_ids, attention_mask) -> [B, card]`` probabilities of one concept."""
    return lambda input_ids, attention_mask: model.concept_logits(input_ids, attention_mask)[concept].softmax(
        -1
    )


@torch.no_grad()
def predicted_values(model: ConceptBottleneckModel, batch: dict, concept: int) -> torch.Tensor:
    """``[B]`` predicted value index of ``concept`` on the unperturbed input (the attribution target)."""
    return concept_prob_fn(model, concept)(batch["input_ids"], batch["attention_mask"]).argmax(-1)


class TokenAttribution:
    """Base class. Subclasses implement :meth:`_scores` on a batch (or one trimmed example)."""

    name = "base"
    per_example = False  # perturbation methods run example by example, trimmed to real tokens

    def __init__(self, tokens: Tokens, **options):
        self.tokens, self.options = tokens, options

    def attribute(self, model: ConceptBottleneckModel, batch: dict, concept: int) -> torch.Tensor:
        """Token scores ``[B, T]`` for ``concept``'s predicted value; 0 on special and pad tokens."""
        model.eval()
        ids, mask = batch["input_ids"], batch["attention_mask"]
        target = predicted_values(model, batch, concept)
        cand = self.tokens.candidates(ids, mask)
        if not self.per_example:
            with torch.enable_grad():
                scores = self._scores(model, ids, mask, concept, target)
        else:
            scores = torch.zeros(ids.shape, dtype=torch.float32)
            for b in range(ids.shape[0]):
                keep = mask[b].bool()
                s = self._scores(
                    model, ids[b : b + 1, keep], mask[b : b + 1, keep], concept, target[b : b + 1]
                )
                scores[b, keep] = s[0].float()
        return torch.where(cand, scores.detach().float(), torch.zeros_like(scores, dtype=torch.float32))

    def attribute_all(self, model: ConceptBottleneckModel, batch: dict,
                      targets: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Token scores ``[B, T]`` of every concept, as :meth:`attribute` gives them one by one. ``targets``:
        the predicted value of each concept when the caller has it (a method that shares work across
        concepts overrides this and skips recomputing them)."""
        return [self.attribute(model, batch, k) for k in range(len(model.concepts))]

    def baselines(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids`` with every candidate token replaced by the removal id."""
        return torch.where(
            self.tokens.candidates(ids, mask), torch.full_like(ids, self.tokens.baseline_id), ids
        )

    def _scores(self, model, ids, mask, concept, target) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@contextmanager
def gradients_to_inputs_only(model: torch.nn.Module):
    """Parameters do not require gradients inside (restored after): a pass that needs gradients only with
    respect to its inputs then records no weight-gradient work (about 20% faster on CPU, same numbers)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _embedding_layer(model: ConceptBottleneckModel) -> torch.nn.Module:
    return model.backbone.model.get_input_embeddings()


class GradientXInput(TokenAttribution):
    """Gradient x input on the word embeddings, summed over the hidden size (captum ``LayerGradientXActivation``)."""

    name = "gradxinput"

    def _scores(self, model, ids, mask, concept, target):
        from captum.attr import LayerGradientXActivation

        attr = LayerGradientXActivation(concept_prob_fn(model, concept), _embedding_layer(model))
        return attr.attribute(ids, target=target, additional_forward_args=(mask,)).sum(-1)


class Saliency(TokenAttribution):
    """captum ``Saliency`` on the word embeddings: L2 norm of |gradient| per token."""

    name = "saliency"

    def _scores(self, model, ids, mask, concept, target):
        from captum.attr import Saliency as CaptumSaliency

        layer, fn = _embedding_layer(model), concept_prob_fn(model, concept)

        def forward(embeds, ids, mask):  # feed `embeds` in place of the embedding layer's output
            handle = layer.register_forward_hook(lambda _m, _i, _o: embeds)
            try:
                return fn(ids, mask)
            finally:
                handle.remove()

        embeds = layer(ids).detach().requires_grad_(True)
        return (
            CaptumSaliency(forward)
            .attribute(embeds, target=target, additional_forward_args=(ids, mask))
            .norm(dim=-1)
        )


class LayerIG(TokenAttribution):
    """captum ``LayerIntegratedGradients`` on the word embeddings from the removal baseline.

    :meth:`attribute_all` computes the same integral (captum's Gauss-Legendre steps and weights) for every
    concept at once: the interpolated embeddings do not depend on the concept, so each step runs the model
    forward once for all concepts and back once per concept, where captum's LIG runs both per concept.
    """

    name = "lig"

    def attribute_all(self, model, batch, targets=None):
        from captum.attr._utils.approximation_methods import approximation_parameters

        model.eval()
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if targets is None:
            with torch.no_grad():
                targets = [lg.argmax(-1) for lg in model.concept_logits(ids, mask)]
        layer, n_steps = _embedding_layer(model), int(self.options.get("n_steps", 16))
        sizes, alphas = (f(n_steps) for f in approximation_parameters("gausslegendre"))
        with torch.no_grad():
            x, x0 = layer(ids), layer(self.baselines(ids, mask))
        rows = int(self.options.get("internal_batch_size") or n_steps * len(ids))
        per_chunk = max(1, rows // len(ids))  # steps per forward, as captum's internal batching splits them
        totals = [torch.zeros_like(x) for _ in targets]
        for start in range(0, n_steps, per_chunk):
            a = torch.tensor(alphas[start:start + per_chunk], dtype=x.dtype, device=x.device)
            w = torch.tensor(sizes[start:start + per_chunk], dtype=x.dtype, device=x.device)
            steps = len(a)
            scaled = (x0 + a.view(-1, 1, 1, 1) * (x - x0)).flatten(0, 1).requires_grad_(True)  # step-major rows
            handle = layer.register_forward_hook(lambda _m, _i, _o, s=scaled: s)
            try:
                with torch.enable_grad(), gradients_to_inputs_only(model):
                    logits = model.concept_logits(ids.repeat(steps, 1), mask.repeat(steps, 1))
                    for k, target in enumerate(targets):
                        prob = logits[k].softmax(-1).gather(1, target.repeat(steps).unsqueeze(1)).sum()
                        (grad,) = torch.autograd.grad(prob, scaled, retain_graph=k < len(targets) - 1)
                        totals[k] += (grad.view(steps, *x.shape) * w.view(-1, 1, 1, 1)).sum(0)
            finally:
                handle.remove()
        cand = self.tokens.candidates(ids, mask)
        return [torch.where(cand, ((x - x0) * t).sum(-1).detach().float(), 0.0) for t in totals]

    def _scores(self, model, ids, mask, concept, target):
        from captum.attr import LayerIntegratedGradients

        lig = LayerIntegratedGradients(concept_prob_fn(model, concept), _embedding_layer(model))
        attr = lig.attribute(
            ids,
            baselines=self.baselines(ids, mask),
            target=target,
            additional_forward_args=(mask,),
            n_steps=int(self.options.get("n_steps", 16)),
            internal_batch_size=self.options.get("internal_batch_size"),
        )
        return attr.sum(-1)


class Gates(TokenAttribution):
    """The model's own per-concept token gates: scores are the gate logits ``log_alpha``."""

    name = "gates"

    def _scores(self, model, ids, mask, concept, target):
        if pooler_method(model) != self.name:
            raise ConfigError(f"method={self.name} needs a model trained with cbm.tokens={self.name}; "
                             f"this one has cbm.tokens={pooler_method(model) or 'none'}")
        with torch.no_grad():
            extras = model.concept_outputs(ids, mask).pooler
        return model.token_pooler.token_scores(extras)[concept]

    def attribute_all(self, model, batch, targets=None):
        """Every concept's gate scores from one forward pass."""
        model.eval()
        ids, mask = batch["input_ids"], batch["attention_mask"]
        scores = self._scores(model, ids, mask, slice(None), None)  # [K, B, T]
        cand = self.tokens.candidates(ids, mask)
        return [torch.where(cand, s.detach().float(), 0.0) for s in scores]


class Attention(Gates):
    """The model's own per-concept attention pooling: scores are the attention weights (one pass)."""

    name = "attention"


def pooler_method(model) -> str | None:
    """``gates`` / ``attention``: the attribution method that reads the model's own token pooler."""
    return getattr(model.token_pooler, "method", None)


class _Perturbation(TokenAttribution):
    """Shared set-up of the captum perturbation methods: one feature per token, removal baseline."""

    per_example = True
    captum_cls = ""

    def _kwargs(self) -> dict:
        return {}

    def _scores(self, model, ids, mask, concept, target):
        import captum.attr

        method = getattr(captum.attr, self.captum_cls)(concept_prob_fn(model, concept))
        feature_mask = torch.arange(ids.shape[1]).unsqueeze(0)
        with torch.no_grad():
            return method.attribute(
                ids,
                baselines=self.baselines(ids, mask),
                target=target,
                additional_forward_args=(mask,),
                feature_mask=feature_mask,
                perturbations_per_eval=int(self.options.get("perturbations_per_eval", 16)),
                **self._kwargs(),
            )


class Ablation(_Perturbation):
    """captum ``FeatureAblation``: drop in probability when each token alone is removed."""

    name, captum_cls = "ablation", "FeatureAblation"


class Lime(_Perturbation):
    """captum ``Lime`` (``n_samples`` random token subsets)."""

    name, captum_cls = "lime", "Lime"

    def _kwargs(self):
        return {"n_samples": int(self.options.get("n_samples", 32))}


class KernelShap(_Perturbation):
    """captum ``KernelShap`` (``n_samples`` coalitions)."""

    name, captum_cls = "kernelshap", "KernelShap"

    def _kwargs(self):
        return {"n_samples": int(self.options.get("n_samples", 32))}


class Shapley(_Perturbation):
    """captum ``ShapleyValueSampling`` (``shapley_samples`` permutations)."""

    name, captum_cls = "shapley", "ShapleyValueSampling"

    def _kwargs(self):
        return {"n_samples": int(self.options.get("shapley_samples", 2))}


_CLASSES = {
    c.name: c for c in (GradientXInput, Saliency, LayerIG, Gates, Attention, Ablation, Lime, KernelShap, Shapley)
}


def get_method(name: str, tokens: Tokens, model: ConceptBottleneckModel | None = None, **options) -> TokenAttribution:
    """The attribution method called ``name``; ``ours`` resolves to ``gates`` or ``lig`` for ``model``.

    Example:
        >>> method = get_method("lig", Tokens.from_tokenizer(session.tokenizer), n_steps=16)
        >>> scores = method.attribute(session.model, batch, concept=0)  # [B, T]
    """
    if name == "ours":
        # token gates are the model's own input selection; attention weights are not a faithful substitute
        # for LIG (CEBaB, docs/results/2026-12-02-explanations.md: comprehensiveness@20% 0.27 vs 0.49), so they stay opt-in
        gates = model is not None and pooler_method(model) == "gates"
        name = "gates" if gates else "lig"
    if name not in _CLASSES:
        raise ConfigError(f"unknown attribution method '{name}'; expected one of {METHODS}")
    return _CLASSES[name](tokens, **options)


def resolve_name(name: str, model: ConceptBottleneckModel) -> str:
    """``ours`` -> ``gates`` or ``lig`` for this model; other names unchanged."""
    return get_method(name, Tokens(0, ()), model).name if name == "ours" else name
