"""Ceiling and leakage: what the concept set allows, and what a model reads beyond its concepts.

A strict concept bottleneck predicts the label from the concepts alone, so it cannot beat the best
label head fitted on the *true* concepts — the concept set's **ceiling**. A model whose label head
reads soft activations (logits, probabilities, context-dependent embeddings) can carry more than
the concept values through them: **leakage**. For every trained model this module reports, on a
split:

- ``ceiling``: logistic regression on one-hot true concepts (fitted on train) on this split's true
  concepts; ``ceiling_lookup``: the majority train label of each combination of true values (the
  best any function of the true concepts does on train's distribution; unseen combinations fall
  back to the regression);
- ``soft``: the model as it predicts (its own soft activations);
- ``hard``: its label head reading its *predicted values* as hard choices (every concept set to its
  argmax with the model's intervention strategy: one-hot, a confident logit vector, or the chosen
  value's embedding);
- ``all_ground_truth``: every concept set to its true value;
- ``ceiling_on_predicted``: the ceiling head reading the model's predicted values (concept values only);
- ``leakage`` = ``soft - hard``: task accuracy (and macro-F1) the soft activations carry beyond the
  hard concepts; ``above_ceiling`` = ``soft - ceiling``: positive means the model uses information
  the true concepts do not hold;
- ``residual`` (hybrid bottleneck): its share of the decision and the metrics with it held at its mean.

Concept embeddings (``activation=embedding``) are context-dependent: the embedding of the chosen value
still comes from the review, so ``hard`` can carry more than the value. For these models the report
adds ``hard_value_only`` / ``all_ground_truth_value_only`` (every concept written as its value's
*prototype*, its mean embedding over the *training* examples predicted to have that value, the same for
every review) and
``leakage_value_only = soft - hard_value_only``, the information the embeddings carry beyond the
concept values.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsecbm.ceiling import ConceptCeiling, metrics
from sparsecbm.interpret.strategies import LOGIT_EPS, Bottleneck, ground_truth_targets
from sparsecbm.models.cbm import Collected


def _diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a[k] - b[k] for k in ("acc", "f1")}


def prototype_table(embeddings: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """``[N, C, m]`` per-example value embeddings and ``[N]`` predicted values -> ``[C, m]``: each value's
    mean embedding over the examples predicted to have it (over all examples when none is)."""
    protos = []
    for v in range(embeddings.shape[1]):
        chosen = predicted == v
        rows = embeddings[chosen, v] if bool(chosen.any()) else embeddings[:, v]
        protos.append(rows.mean(0))
    return torch.stack(protos)


def value_prototypes(embeddings: torch.Tensor, predicted: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, C, m]`` per-example value embeddings -> ``[N, C, m]`` with every example holding each value's
    prototype, a context-free stand-in for the value, the same for every review: ``table`` (``[C, m]``,
    e.g. from the training split, :func:`prototype_table`) or, without it, computed from these examples."""
    if table is None:
        table = prototype_table(embeddings, predicted)
    return table.unsqueeze(0).expand_as(embeddings)


def bottleneck_report(model, split: Collected, ceiling: ConceptCeiling, eps: float = LOGIT_EPS,
                      train: Collected | None = None) -> dict[str, Any]:
    """The ``intervention`` (concept models) and ``bottleneck`` blocks of ``results.json`` for a split.

    Reads the model's outputs on the split (collected once, :func:`sparsecbm.session.collect`); every
    variant only re-runs the label head.

    Args:
        model: The :class:`~sparsecbm.models.cbm.ConceptBottleneckModel` (any mode).
        split: Its outputs on the split, with the true concepts and labels.
        ceiling: Heads fitted on the training split's true concepts (:meth:`ConceptCeiling.from_datamodule`).
        eps: See :func:`~sparsecbm.interpret.strategies.target_activation`.
        train: Its outputs on the training split; concept-embedding models take their value prototypes from
            it (without it, from the evaluated split itself, which lets that split's reviews shape them).
    """
    n, truth, labels = ceiling.n_labels, split.truth, split.labels
    if not model.has_concepts:
        soft = metrics(split.label_logits.argmax(-1), labels, n)
        ceil = ceiling.evaluate(truth, labels)
        return {
            "bottleneck": {
                "n_examples": int(labels.shape[0]),
                "ceiling": ceil["logreg"],
                "ceiling_lookup": ceil["lookup"],
                "soft": soft,
                "above_ceiling": _diff(soft, ceil["logreg"]),
            }
        }

    b = Bottleneck.from_model(model, split.outputs, eps)
    predicted = torch.stack([lg.argmax(-1) for lg in b.concept_logits], dim=-1)  # [N, K]
    cards = b.cardinalities

    def run(targets=None, residual=None) -> dict[str, float]:
        return metrics(b.label_logits(b.inputs(targets), residual).argmax(-1), labels, n)

    soft, gt = run(), run(ground_truth_targets(truth, cards))
    hard_targets = ground_truth_targets(predicted, cards)  # the predicted values as one-hot targets
    hard = run(hard_targets)
    ceil = ceiling.evaluate(truth, labels)
    report: dict[str, Any] = {
        "n_examples": int(labels.shape[0]),
        "ceiling": ceil["logreg"],
        "ceiling_lookup": ceil["lookup"],
        "soft": soft,
        "hard": hard,
        "all_ground_truth": gt,
        "ceiling_on_predicted": ceiling.evaluate(predicted, labels)["logreg"],
        "leakage": _diff(soft, hard),
        "above_ceiling": _diff(soft, ceil["logreg"]),
    }
    if b.embeddings is not None:
        # context-free: each value's prototype, the same for every example
        tables = [None] * len(b.embeddings)
        if train is not None:
            tb = Bottleneck.from_model(model, train.outputs, eps)
            tables = [prototype_table(e, lg.argmax(-1)) for e, lg in zip(tb.embeddings, tb.concept_logits)]
        report["prototypes_from"] = "train" if train is not None else "evaluated split"
        protos = [value_prototypes(e, predicted[:, k], tables[k]) for k, e in enumerate(b.embeddings)]
        value_only = Bottleneck(b.concept_logits, b.label_head, b.activation, b.eps, b.device, protos, b.residual)

        def run_value_only(targets) -> dict[str, float]:
            return metrics(value_only.label_logits(value_only.inputs(targets)).argmax(-1), labels, n)

        report["hard_value_only"] = run_value_only(hard_targets)
        report["all_ground_truth_value_only"] = run_value_only(ground_truth_targets(truth, cards))
        report["leakage_value_only"] = _diff(soft, report["hard_value_only"])
    if b.residual is not None:
        from sparsecbm.models.residual import residual_share

        mean = b.residual.mean(0, keepdim=True).expand_as(b.residual)
        share = residual_share(lambda a, r: b.label_logits(a, r), b.inputs(), b.residual)
        report["residual"] = {**share, "without": run(residual=mean), "dim": int(b.residual.shape[-1])}
    intervention = {"none": soft, "all_ground_truth": gt, "n_examples": int(labels.shape[0])}
    return {"intervention": intervention, "bottleneck": report}


def split_report(model, loader, ceiling: ConceptCeiling, train_loader=None, eps: float = LOGIT_EPS) -> dict[str, Any]:
    """:func:`bottleneck_report` of ``model`` on a data loader (the model runs once over it, and once over
    ``train_loader`` for a concept-embedding model's value prototypes)."""
    from sparsecbm.session import collect

    train = collect(model, train_loader) if train_loader is not None and model.has_concepts and \
        model.activation == "embedding" else None
    return bottleneck_report(model, collect(model, loader), ceiling, eps, train)
