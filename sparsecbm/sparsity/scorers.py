"""Per-concept importance scores: one class per scorer, each declaring what it needs.

``MagnitudeScorer``  |w| (weights) or the squared L2 norm of a unit's weights. Concept-independent: with
                     shared weights every concept gets the *same* subnetwork (a labelled baseline).
``MovementScorer``   first-order movement pruning: S_k += -w * dL/dw_k, accumulated during training from the
                     gradient that flows through concept k's subnetwork; for structured units the sum over
                     the unit's weights. Memory: one float32 per masked weight (unstructured) or per unit and
                     concept while training.
``OBertScorer``      second-order Optimal-BERT-Surgeon score w_i^2 / (2 [F^-1]_ii), F the block-diagonal empirical
                     Fisher of concept k's own loss from ``batches`` gradient batches (maths: obert_math.py); for
                     structured units the sum of the diagonal-Fisher terms w_i^2 F_ii / 2 of its weights.
``TaylorScorer``     structured units (heads, FFN neurons): first-order Taylor importance of a unit mask
                     variable m_u (Michel et al. 2019; Molchanov et al. 2019), sum over examples of
                     |dL_k/dm_u| with L_k concept k's own loss through its own subnetwork.
``FisherScorer``     structured units: the diagonal empirical Fisher of the unit mask variables,
                     sum over examples of (dL_k/dm_u)^2 (Kwon et al. 2022).
``SignedTaylorScorer`` structured units: -sum over examples of dL_k/dm_u, the first-order loss increase when
                     the unit is removed (a unit that hurts concept k ranks last).
``RandomScorer``     the control: fixed random scores per concept from the run's seed (arbitrary per-concept
                     masks under the same schedule: what specificity co-adaptation alone gives).

Taylor, signed Taylor and Fisher read one backward pass per score batch for all K concepts at once: concept k's logits
depend on its own branch only, so the gradient of sum_k L_k w.r.t. concept k's mask variables is dL_k/dm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sparsecbm.sparsity.obert_math import diagonal_fisher_scores, fisher_inverse_diagonal, obert_scores  # noqa: F401

# ------------------------------------------------------------------------------------------ context


@dataclass
class ScoreContext:
    """What a scorer may read besides the backbone.

    Attributes:
        concept_loss: ``(concept, batch) -> loss`` of that concept alone through its own subnetwork.
        concept_losses: ``batch -> [loss_0, ..., loss_{K-1}]``, every concept's own loss from one pass.
        batches: ``() -> iterable of batches`` drawn for this update (shuffled with the run's seed).
    """

    concept_loss: Callable[[int, dict], torch.Tensor] | None = None
    concept_losses: Callable[[dict], list[torch.Tensor]] | None = None
    batches: Callable[[], Iterable[dict]] | None = None

    def need(self, what: str, scorer: str) -> Any:
        value = getattr(self, what)
        if value is None:
            raise ValueError(f"sparsity scorer {scorer} needs {what} (training batches and each concept's loss); "
                             "the pruner was built without them")
        return value


# ---------------------------------------------------------------------------------------------- base


def unit_sums(sb, weight_scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Structured: a unit's score sums its producers' rows and its consumer's columns, ``[K, n_units]``."""
    out = {}
    layers = sb.masked_layers()
    for gname, group in sb.unit_groups().items():
        total = 0.0
        for lname, layer in layers.items():
            if layer.group is not group:
                continue
            s = weight_scores[lname]
            per_row = s.sum(2) if layer.role == "producer" else s.sum(1)  # [K, out] or [K, in]
            total = total + per_row.reshape(s.shape[0], group.n_units, group.unit_size).sum(2)
        out[gname] = total
    return out


class Scorer:
    """Scores every mask entry (a weight, or a structured unit) per concept.

    Class attributes say what a scorer needs, so the pruner and the callback never branch on names:

    Attributes:
        name: Short name (reports, ``results.json``).
        concept_specific: Scores come from each concept's own loss (False: one shared ranking, or the control).
        control: The random-mask control (arbitrary per-concept masks, chosen by nothing).
        needs_batches: Reads training batches and concept losses at every update.
        needs_rank_sync: Scores differ between data-parallel ranks (averaged before masks are chosen).
        needs_full_params: Reads weights outside a forward pass (FSDP must gather them).
        supports_fsdp: Works under a sharded strategy.
        granularities: The granularities it scores.
    """

    name = "scorer"
    concept_specific = True
    control = False
    needs_batches = False
    needs_rank_sync = True
    needs_full_params = False
    supports_fsdp = True
    granularities: tuple[str, ...] = ("unstructured", "neuron", "head", "structured")

    def __init__(self, batches: int = 4, name: str | None = None):
        if name is not None and name != self.name:  # configs carry the name for tables; it must match the class
            raise ValueError(f"sparsity.scorer.name={name} does not match its _target_ ({type(self).__name__}, "
                             f"name {self.name})")
        self.batches = int(batches)

    def config(self) -> dict[str, Any]:
        """A plain mapping that rebuilds this scorer (stored in checkpoints and mask files)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "name": self.name,
                "batches": self.batches, **self._params()}

    def _params(self) -> dict[str, Any]:
        return {}

    def check(self, sb) -> None:
        if sb.granularity not in self.granularities:
            raise ValueError(f"sparsity scorer {self.name} needs granularity in {self.granularities}, "
                             f"not {sb.granularity} (for {sb.granularity} use one of "
                             f"{[n for n, c in SCORERS.items() if sb.granularity in c.granularities]})")

    def attach(self, sb, seed: int = 0) -> None:
        """Called once before training with the run's seed (scorers that accumulate from training gradients
        hook in here)."""

    def weight_scores(self, sb, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        """``[K_masks, out, in]`` per masked layer."""
        raise NotImplementedError(f"{self.name} scores structured units only")

    def unit_scores(self, sb, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        """``[K_masks, n_units]`` per unit group (default: sums of the weight scores)."""
        return unit_sums(sb, self.weight_scores(sb, ctx))

    def scores(self, sb, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        """Scores keyed like ``sb.mask_targets()``."""
        if sb.granularity == "unstructured":
            return self.weight_scores(sb, ctx)
        return self.unit_scores(sb, ctx)


class MagnitudeScorer(Scorer):
    """|w|, or the squared L2 norm of a unit: the same for every concept (a shared-mask baseline)."""

    name = "magnitude"
    concept_specific = False
    needs_rank_sync = False  # data-parallel weights are equal
    needs_full_params = True

    def weight_scores(self, sb, ctx):
        n = sb.state.n_masks
        return {name: layer.weight.detach().abs().unsqueeze(0).expand(n, -1, -1)
                for name, layer in sb.masked_layers().items()}

    def unit_scores(self, sb, ctx):
        return unit_sums(sb, {k: v.pow(2) for k, v in self.weight_scores(sb, ctx).items()})


class MovementScorer(Scorer):
    """-w · dL/dw accumulated during training from the gradient through each concept's subnetwork."""

    name = "movement"

    def attach(self, sb, seed: int = 0) -> None:
        n = sb.state.n_masks
        if sb.granularity == "unstructured":
            for layer in sb.masked_layers().values():
                if not hasattr(layer, "mask_movement"):
                    layer.register_buffer("mask_movement", torch.zeros(layer.mask_weights.shape, dtype=torch.float32))

                def hook(grad, concept, layer=layer):
                    with torch.no_grad():  # every pass (single or batched) reports its concept's gradient
                        layer.mask_movement[concept].sub_(layer.weight.detach() * grad)

                layer.grad_hook = hook
            return
        for group in sb.unit_groups().values():
            if not hasattr(group, "mask_movement"):
                group.register_buffer("mask_movement", torch.zeros(n, group.n_units, dtype=torch.float32))
        for layer in sb.masked_layers().values():
            def unit_hook(grad, concept, layer=layer):
                with torch.no_grad():
                    s = -(layer.weight.detach() * grad)
                    per = s.sum(1) if layer.role == "producer" else s.sum(0)
                    g = layer.group
                    g.mask_movement[concept].add_(per.view(g.n_units, g.unit_size).sum(1).float())

            layer.grad_hook = unit_hook

    def weight_scores(self, sb, ctx):
        return {name: layer.mask_movement.clone() for name, layer in sb.masked_layers().items()}

    def unit_scores(self, sb, ctx):
        return {name: group.mask_movement.clone() for name, group in sb.unit_groups().items()}


class OBertScorer(Scorer):
    """Second-order oBERT scores from ``batches`` gradients of each concept's own loss."""

    name = "obert"
    needs_batches = True
    supports_fsdp = False

    def __init__(self, batches: int = 4, block: int = 32, damp: float = 0.01, name: str | None = None):
        super().__init__(batches, name)
        self.block, self.damp = int(block), float(damp)

    def _params(self):
        return {"block": self.block, "damp": self.damp}

    def _collect_grads(self, sb, concept: int, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        """Per-batch gradients ``[m, out, in]`` of concept ``concept``'s loss w.r.t. each masked layer's weight."""
        loss_fn, batches = ctx.need("concept_loss", self.name), ctx.need("batches", self.name)
        layers = sb.masked_layers()
        store: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        saved = {n: layer.grad_hook for n, layer in layers.items()}
        for name, layer in layers.items():
            layer.grad_hook = lambda g, k, name=name: store[name].append(g.detach().clone())
        try:
            for batch in batches():
                sb.zero_grad(set_to_none=True)
                loss_fn(concept, batch).backward()
        finally:
            for name, layer in layers.items():
                layer.grad_hook = saved[name]
            sb.zero_grad(set_to_none=True)
        if not all(store.values()):
            raise RuntimeError("sparsity scorer obert collected no gradients: is the training data empty?")
        return {n: torch.stack(g) for n, g in store.items()}

    def _per_concept(self, sb, ctx, score) -> dict[str, torch.Tensor]:
        layers = sb.masked_layers()
        per_concept = []
        for k in range(sb.state.n_masks):  # shared: the one mask from concept 0's loss (as before)
            grads = self._collect_grads(sb, k, ctx)
            per_concept.append({name: score(layers[name].weight.detach(), g) for name, g in grads.items()})
        return {name: torch.stack([pc[name] for pc in per_concept]) for name in layers}

    def weight_scores(self, sb, ctx):
        return self._per_concept(sb, ctx, lambda w, g: obert_scores(w, g, self.block, self.damp))

    def unit_scores(self, sb, ctx):
        return unit_sums(sb, self._per_concept(sb, ctx, diagonal_fisher_scores))


class UnitMaskScorer(Scorer):
    """Base of the unit-mask scorers: per-example ``dL_k/dm_u`` of every structured unit, reduced by
    :meth:`reduce` and summed over the examples of ``batches`` score batches."""

    needs_batches = True
    supports_fsdp = False
    granularities = ("neuron", "head", "structured")

    @staticmethod
    def reduce(grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def unit_scores(self, sb, ctx):
        losses_fn, batches = ctx.need("concept_losses", self.name), ctx.need("batches", self.name)
        groups = sb.unit_groups()
        consumers = {gname: next(lyr for lyr in sb.masked_layers().values()
                                 if lyr.group is group and lyr.role == "consumer") for gname, group in groups.items()}
        scores = {gname: torch.zeros(sb.state.n_masks, g.n_units, dtype=torch.float64) for gname, g in groups.items()}
        sb.state.probe = True
        seen = 0
        try:
            for batch in batches():
                for layer in consumers.values():
                    layer.probes = []
                losses = losses_fn(batch)
                probes = [(gname, k, m) for gname, layer in consumers.items() for k, m in layer.probes]
                if not probes:
                    raise RuntimeError(f"sparsity scorer {self.name}: no unit variable was reached; "
                                       "does the forward pass run the masked blocks with gradients?")
                total = sum(loss * batch["input_ids"].shape[0] for loss in losses)  # per-example sums
                grads = torch.autograd.grad(total, [m for _, _, m in probes], allow_unused=True)
                for (gname, k, _), g in zip(probes, grads):
                    if g is not None:
                        scores[gname][k] += self.reduce(g.detach().double())
                seen += 1
        finally:
            sb.state.probe = False
            for layer in consumers.values():
                layer.probes = []
        if not seen:
            raise RuntimeError(f"sparsity scorer {self.name} got no score batch: is the training data empty?")
        return {k: v.float() for k, v in scores.items()}


class TaylorScorer(UnitMaskScorer):
    """First-order Taylor importance of each unit: Σ_examples |dL_k/dm_u|."""

    name = "taylor"

    @staticmethod
    def reduce(grad):
        return grad.abs().sum(0)


class FisherScorer(UnitMaskScorer):
    """Diagonal empirical Fisher of each unit mask variable: Σ_examples (dL_k/dm_u)² (Kwon et al. 2022)."""

    name = "fisher"

    @staticmethod
    def reduce(grad):
        return grad.pow(2).sum(0)


class SignedTaylorScorer(UnitMaskScorer):
    """First-order estimate of the loss increase when a unit is removed: -Σ_examples dL_k/dm_u. Unlike
    :class:`TaylorScorer`, a unit whose removal would *lower* concept k's loss (it carries another concept's
    signal into k's features) ranks last, not first (tests/sparsity/test_scorers.py: the units that read a
    concept's token)."""

    name = "taylor_signed"

    @staticmethod
    def reduce(grad):
        return -grad.sum(0)


class RandomScorer(Scorer):
    """The control: fixed random scores per concept and entry, drawn once from ``seed`` (default: the run's
    seed), so each concept gets its own arbitrary subnetwork under the same schedule and sparsity (the masks
    of successive updates are nested, as a fixed ranking's are). Whatever specificity its cross-mask matrix
    shows comes from the heads adapting to their masks, not from a choice of units; a scorer's specificity
    means something only above this one's (``sparsity.random_control=true`` trains it beside a run)."""

    name = "random"
    concept_specific = False
    control = True
    needs_rank_sync = False  # the same seed on every rank: the same scores

    def __init__(self, batches: int = 4, seed: int | None = None, name: str | None = None):
        super().__init__(batches, name)
        self.seed = None if seed is None else int(seed)
        self._scores: dict[str, torch.Tensor] = {}

    def _params(self):
        return {"seed": self.seed}

    def attach(self, sb, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(1_000_003 * (self.seed if self.seed is not None else int(seed)) + 17)
        n = sb.state.n_masks
        if sb.granularity == "unstructured":
            shapes = {name: layer.weight.shape for name, layer in sb.masked_layers().items()}
        else:
            shapes = {name: (group.n_units,) for name, group in sb.unit_groups().items()}
        self._scores = {name: torch.rand(n, *shape, generator=g) for name, shape in sorted(shapes.items())}

    def weight_scores(self, sb, ctx):
        return {name: s.clone() for name, s in self._scores.items()}

    def unit_scores(self, sb, ctx):
        return {name: s.clone() for name, s in self._scores.items()}


SCORERS: dict[str, type[Scorer]] = {c.name: c for c in (MagnitudeScorer, MovementScorer, OBertScorer,
                                                        TaylorScorer, FisherScorer, SignedTaylorScorer,
                                                        RandomScorer)}


def make_scorer(spec: Scorer | Mapping[str, Any] | None) -> Scorer:
    """A :class:`Scorer` from an instance or a ``_target_`` mapping (what ``conf/sparsity/scorer/<name>.yaml``
    holds; ``sparsity/scorer=<name>`` picks one); the mapping's other keys are its arguments. ``None``: magnitude.

    A stored ``name`` (checkpoints and mask files keep :meth:`Scorer.config`) must be the class's own.
    """
    if isinstance(spec, Scorer):
        return spec
    if spec is None:
        return MagnitudeScorer()
    from omegaconf import DictConfig, OmegaConf

    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    target = spec.pop("_target_", None)
    if target is None:
        raise ValueError(f"sparsity.scorer {spec} has no _target_ (a Scorer class); pick one with "
                         f"sparsity/scorer=<name>, one of {sorted(SCORERS)} (conf/sparsity/scorer/)")
    from hydra.utils import get_class

    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise ValueError(f"sparsity.scorer._target_={target} is not a sparsecbm Scorer")
    try:
        return cls(**spec)
    except TypeError as e:
        raise ValueError(f"sparsity.scorer ({cls.name}): {e}") from e
