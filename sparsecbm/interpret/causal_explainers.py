"""Explainers of a model's counterfactual behaviour, and their ICaCE evaluation on human counterfactual pairs.

Each explainer estimates ``N(x') - N(x)`` for a pair ``(x, x')`` changing concept ``C`` from ``a`` to ``b``
without reading ``x'`` (it may read ``x``, ``C``, ``a``, ``b`` and the base's concept values, as CEBaB's
pipeline allows, and the *training* split):

- ``hard``: the model's own intervention, ``N(x | do(C = b)) - N(x)`` (a one-hot ``b``);
- ``soft``: the same with ``C`` set to the model's mean predicted distribution of ``C`` over the training
  texts whose true value is ``b`` (what the model typically reads from a ``b`` text);
- ``mask`` / ``mask_hard`` (SparseCBM): ``C``'s own subnetwork mask edited toward ``b`` on ``x``
  (:class:`~sparsecbm.sparsity.mask_editing.MaskEditor`), the model re-run (and, ``mask_hard``, ``C`` also set);
- ``conexp`` (CEBaB's CONEXP): ``E[N(x~) | C = b] - E[N(x~) | C = a]`` over the training texts
  (``CEBaBing/CEBaB: code/eval_pipeline/explainers/conexp.py``);
- ``approx`` (an approximate counterfactual, as Causal Proxy Models sample them for evaluation:
  ``frankaging/Causal-Proxy-Model: Proxy_training.py``, a random training text whose ``C`` is ``b``):
  ``N(x~) - N(x)``; ``approx_matched``: ``x~`` also has the base's values of the other concepts (any
  ``C = b`` text when none has);
- ``proxy`` (a concept model explaining a black box, as a Causal Proxy Model does): a second CBM ``P``
  trained to imitate ``N``; ``P(x | do(C = b)) - N(x)`` (CPM's estimate); ``proxy_delta``:
  ``P(x | do(C = b)) - P(x)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparsecbm.data.counterfactuals import CounterfactualPairs
from sparsecbm.errors import CheckpointError, ConfigError
from sparsecbm.interpret.causal_model import CausalModel
from sparsecbm.interpret.icace import ICaCEReport, effect_norms, score
from sparsecbm.interpret.strategies import Bottleneck

EXPLAINERS = ("hard", "soft", "mask", "mask_hard", "conexp", "approx", "approx_matched", "proxy", "proxy_delta")
#: The explainers ``results.json``'s ``icace`` block runs (no mask edits: one backward pass per pair).
CHEAP = ("hard", "soft", "conexp", "approx", "approx_matched")


@dataclass
class TrainingReference:
    """What explainers may learn from: the training texts' true values ``[N, K]``, the model's label
    distribution ``[N, L]`` and, for a concept model, its concept distributions (per concept ``[N, C_k]``)."""

    concepts: torch.Tensor
    label_probs: torch.Tensor
    concept_probs: list[torch.Tensor] | None = None

    @classmethod
    def of(cls, model: CausalModel, texts: Sequence[str], concepts) -> TrainingReference:
        concepts = torch.as_tensor(concepts, dtype=torch.long).reshape(len(texts), -1)
        if model.has_concepts:
            b = model.bottleneck(texts)
            return cls(concepts, b.label_probs(), b.concept_probs())
        return cls(concepts, model.label_probs(texts))


def select(b: Bottleneck, idx: torch.Tensor) -> Bottleneck:
    """The rows ``idx`` of a bottleneck (e.g. one row per pair from the pairs' unique texts)."""
    pick = lambda ts: None if ts is None else [t[idx] for t in ts]  # noqa: E731
    return Bottleneck(pick(b.concept_logits), b.label_head, b.activation, b.eps, b.device, pick(b.embeddings),
                      None if b.residual is None else b.residual[idx])


class PairContext:
    """One split's pairs with everything explainers share: the model's predictions on the base texts
    (``base_probs``, ``[P, L]``), their bottleneck (concept models) and the training reference."""

    def __init__(self, model: CausalModel, pairs: CounterfactualPairs, train: TrainingReference, seed: int = 0):
        self.model, self.pairs, self.train, self.seed = model, pairs, train, seed
        self.texts, self.base_idx, self.cf_idx = pairs.texts()
        base, cf = torch.as_tensor(self.base_idx), torch.as_tensor(self.cf_idx)
        self.bottleneck = None
        if model.has_concepts:
            full = model.bottleneck(self.texts)
            probs = full.label_probs()
            self.bottleneck = select(full, base)
        else:
            probs = model.label_probs(self.texts)
        self.base_probs, self.true = probs[base], probs[cf] - probs[base]
        self.concepts = [p.concept for p in pairs]
        self.after = [p.after for p in pairs]

    def rows_of(self, concept: str) -> torch.Tensor:
        return torch.tensor([i for i, c in enumerate(self.concepts) if c == concept], dtype=torch.long)


# --------------------------------------------------------------------------- the explainers
def intervention(ctx: PairContext, strategy: str = "hard", bottleneck: Bottleneck | None = None,
                 model: CausalModel | None = None) -> torch.Tensor:
    """``P(x | do(C = b))`` per pair (``[P, L]``): ``hard`` one-hot, ``soft`` the training mean distribution."""
    model = model or ctx.model
    b = bottleneck or ctx.bottleneck
    out = torch.zeros_like(ctx.base_probs)
    for concept in sorted(set(ctx.concepts)):
        rows = ctx.rows_of(concept)
        values = [ctx.after[i] for i in rows.tolist()]
        targets = model.one_hot(concept, values)
        if strategy == "soft":
            targets = soft_targets(ctx, concept, values)
        out[rows] = model.set_concept(select(b, rows), concept, targets)
    return out


def soft_targets(ctx: PairContext, concept: str, values: Sequence[str]) -> torch.Tensor:
    """Per value, the model's mean predicted distribution of ``concept`` over training texts holding it."""
    spec, k = ctx.model.concept_set[concept], ctx.model.concept_set.position(concept)
    probs, truth = ctx.train.concept_probs[k], ctx.train.concepts[:, k]
    table = torch.stack([probs[truth == v].mean(0) if bool((truth == v).any()) else torch.eye(spec.cardinality)[v]
                         for v in range(spec.cardinality)])
    return table[[spec.values.index(v) for v in values]]


def conexp(ctx: PairContext) -> torch.Tensor:
    """CEBaB's CONEXP: the difference of the training texts' mean prediction given ``C = b`` and ``C = a``."""
    cs, out = ctx.model.concept_set, torch.zeros_like(ctx.base_probs)

    def mean(concept: str, value: str) -> torch.Tensor:
        truth = ctx.train.concepts[:, cs.position(concept)]
        return ctx.train.label_probs[truth == cs[concept].values.index(value)].mean(0)

    for i, p in enumerate(ctx.pairs):
        out[i] = mean(p.concept, p.after) - mean(p.concept, p.before)
    return torch.nan_to_num(out)  # a value no training text holds: no estimate (0)


def approx(ctx: PairContext, matched: bool = False) -> tuple[torch.Tensor, str]:
    """``N(x~) - N(x)`` with ``x~`` a random training text whose ``C`` is ``b`` (and, ``matched``, whose other
    concepts have the base's values when one has); seeded with ``ctx.seed``."""
    cs, rng = ctx.model.concept_set, random.Random(ctx.seed)
    truth = ctx.train.concepts
    out, fallback = torch.zeros_like(ctx.base_probs), 0
    for i, p in enumerate(ctx.pairs):
        k = cs.position(p.concept)
        pool = truth[:, k] == cs[p.concept].values.index(p.after)
        if matched:
            same = pool.clone()
            for name, value in p.base_values.items():
                if name != p.concept and name in cs.names:
                    same &= truth[:, cs.position(name)] == cs[name].values.index(value)
            fallback += int(not bool(same.any()))
            pool = same if bool(same.any()) else pool
        rows = torch.nonzero(pool).flatten().tolist()
        out[i] = ctx.train.label_probs[rng.choice(rows)] - ctx.base_probs[i] if rows else 0.0
    note = f"{fallback} of {len(ctx.pairs)} pairs had no training text matching the other concepts" if matched else ""
    return out, note


def mask_edit(ctx: PairContext, rows: torch.Tensor, then_set: bool, portion: float) -> torch.Tensor:
    """``N(x)`` after an edit of ``C``'s own mask toward ``b`` (``[len(rows), L]``), minus ``N(x)``."""
    texts = [ctx.texts[ctx.base_idx[i]] for i in rows.tolist()]
    after = ctx.model.mask_edit_probs(texts, [ctx.concepts[i] for i in rows.tolist()],
                                      [ctx.after[i] for i in rows.tolist()], portion, then_set)
    return after - ctx.base_probs[rows]


# --------------------------------------------------------------------------- running them
def resolve_explainers(names: Sequence[str] | str, model: CausalModel, proxy: CausalModel | None) -> list[str]:
    """``auto`` (every explainer that applies) or a list of names, checked against the model."""
    auto = names == "auto" or list(names) == ["auto"]
    if auto:
        names = [n for n in EXPLAINERS if (n not in ("hard", "soft") or model.has_concepts)
                 and (not n.startswith("mask") or model.has_masks) and (not n.startswith("proxy") or proxy)]
    names = list(names)
    if bad := [n for n in names if n not in EXPLAINERS]:
        raise ConfigError(f"unknown explainer(s) {bad}; expected some of {list(EXPLAINERS)} (or auto)")
    if not model.has_concepts and (own := [n for n in names if n in ("hard", "soft", "mask", "mask_hard")]):
        raise CheckpointError(f"explainers {own} intervene on the model's concepts, but {model.name or 'the model'} is "
                              "a 'standard' model without concepts; explain it with conexp, approx or a proxy "
                              "(proxy_ckpt=<a CBM trained to imitate it>)")
    if not model.has_masks and (m := [n for n in names if n.startswith("mask")]):
        raise CheckpointError(f"explainers {m} edit per-concept subnetwork masks, but {model.name or 'the model'} has "
                              "none; use a checkpoint trained with sparsity=... (and sparsity.shared=false)")
    if proxy is None and (p := [n for n in names if n.startswith("proxy")]):
        raise ConfigError(f"explainers {p} need proxy_ckpt=<a concept model trained to imitate this one>")
    return names


def evaluate_icace(model: CausalModel, pairs: CounterfactualPairs, train: TrainingReference,
                   explainers: Sequence[str] | str = "auto", proxy: CausalModel | None = None, seed: int = 0,
                   mask_portion: float = 0.05, mask_max_pairs: int | None = None) -> ICaCEReport:
    """Score every explainer on ``pairs`` (:func:`~sparsecbm.interpret.icace.score`).

    Args:
        model: The model whose effects are estimated (``N``).
        pairs: A split's counterfactual pairs.
        train: The training reference (of ``model``) for ``soft``, ``conexp`` and ``approx``.
        explainers: Names (:data:`EXPLAINERS`) or ``auto``.
        proxy: A concept model imitating ``N`` (``proxy`` / ``proxy_delta``).
        seed: Seeds ``approx``'s draws and the ``mask`` subset.
        mask_max_pairs: Mask edits cost a backward pass each: at most this many pairs (a seeded sample; the
            report then also scores ``hard`` on the same pairs as ``hard@mask_pairs``).
    """
    names = resolve_explainers(explainers, model, proxy)
    if proxy is not None and (not proxy.has_concepts or proxy.label_values != model.label_values):
        raise CheckpointError("proxy_ckpt must be a concept model with the same labels as the explained model; got "
                              f"mode={proxy.mode}, labels {proxy.label_values} vs {model.label_values}")
    ctx = PairContext(model, pairs, train, seed)
    dirs = [p.direction for p in pairs]
    scores = []
    proxy_b = proxy_probs = None
    for name in names:
        note, rows = "", None
        if name in ("hard", "soft"):
            est = intervention(ctx, name) - ctx.base_probs
        elif name == "conexp":
            est = conexp(ctx)
        elif name in ("approx", "approx_matched"):
            est, note = approx(ctx, matched=name == "approx_matched")
        elif name.startswith("proxy"):
            if proxy_b is None:
                full = proxy.bottleneck(ctx.texts)
                proxy_b = select(full, torch.as_tensor(ctx.base_idx))
                proxy_probs = proxy_b.label_probs()
            done = intervention(ctx, "hard", proxy_b, proxy)
            est = done - (proxy_probs if name == "proxy_delta" else ctx.base_probs)
            note = f"proxy {proxy.name} ({proxy.mode})"
        else:  # mask, mask_hard
            rows = torch.arange(len(pairs))
            if mask_max_pairs is not None and len(pairs) > mask_max_pairs:
                rows = torch.tensor(sorted(random.Random(seed).sample(range(len(pairs)), mask_max_pairs)))
                note = f"{len(rows)} of {len(pairs)} pairs (seeded sample)"
            est = mask_edit(ctx, rows, name == "mask_hard", mask_portion)
        if rows is None:
            scores.append(score(name, ctx.concepts, dirs, ctx.true, est, note))
            continue
        keep = rows.tolist()
        pick = lambda seq, keep=keep: [seq[i] for i in keep]  # noqa: E731
        scores.append(score(name, pick(ctx.concepts), pick(dirs), ctx.true[rows], est, note))
        if len(rows) < len(pairs) and not any(s.explainer == "hard@mask_pairs" for s in scores):
            hard = intervention(ctx, "hard")[rows] - ctx.base_probs[rows]
            scores.append(score("hard@mask_pairs", pick(ctx.concepts), pick(dirs), ctx.true[rows], hard, note))
    return ICaCEReport(scores=scores, split=pairs.split, n_pairs=len(pairs), counts=pairs.counts(),
                       effect=effect_norms(ctx.concepts, ctx.true),
                       meta={"model": model.describe(), "pairs": pairs.summary(), "seed": seed,
                             "mask_portion": mask_portion})


def icace_block(session, datamodule, split: str = "test", seed: int = 0) -> dict | None:
    """``results.json``'s ``icace`` block: the cheap explainers (:data:`CHEAP`, those that apply) on ``split``'s
    counterfactual pairs, summarised (:meth:`ICaCEReport.summary`); ``None`` when the data has no pairs there.

    Args:
        session: The model's :class:`~sparsecbm.session.InferenceSession` (after training:
            :meth:`~sparsecbm.session.InferenceSession.for_model`).
        datamodule: The set-up data module (its pairs and its training split).
    """
    pairs = datamodule.counterfactual_pairs(split) if hasattr(datamodule, "counterfactual_pairs") else None
    if pairs is None or len(pairs) == 0:
        return None
    model = CausalModel(session, batch_size=datamodule.eval_batch_size)
    train = datamodule.raw["train"]
    names = [n for n in CHEAP if model.has_concepts or n not in ("hard", "soft")]
    report = evaluate_icace(model, pairs, TrainingReference.of(model, train.texts, train.concepts), names, seed=seed)
    per_concept = {c: sum(d.values()) for c, d in pairs.counts().items()}  # per direction: the causal command
    return {**report.summary(), "source": pairs.source, "pairs_per_concept": per_concept}
