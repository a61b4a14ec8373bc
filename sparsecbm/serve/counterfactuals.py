"""The explorer's counterfactual view: for an example of the split that has human counterfactuals (CEBaB's
edited reviews, :mod:`sparsecbm.data.counterfactuals`), what the model's concept intervention predicts beside
what the model actually does on the human-edited text, per label, with the ICaCE errors.

A thin layer: the pairs are the data module's (:meth:`~sparsecbm.data.CBMDataModule.counterfactual_pairs`),
the numbers :func:`~sparsecbm.interpret.causal_model.counterfactual_effect`'s, the same function the causal
evaluation (``python -m sparsecbm.causal``) scores with. Mixed into :class:`~sparsecbm.serve.explorer.Explorer`
(it reads the explorer's session, data, split and lock).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sparsecbm.errors import ConfigError, DataError
from sparsecbm.serve.core import ExplorerError


class CounterfactualIndex:
    """The split's pairs, keyed by the example index of their base text (``None``: the data has none)."""

    def __init__(self, pairs, texts: list[str], reason: str | None = None):
        self.pairs, self.reason = pairs, reason
        position: dict[str, int] = {}
        for i, text in enumerate(texts):
            position.setdefault(text, i)
        self.example_of = position
        self.by_example: dict[int, list] = defaultdict(list)
        for pair in pairs or ():
            # pairs name data-file rows; the explorer's examples skip some rows (e.g. label "no majority"),
            # so a pair is found by its (stripped) text
            i = position.get(pair.base_text)
            if i is not None:
                self.by_example[i].append(pair)


class Counterfactuals:
    """:meth:`counterfactual_examples` and :meth:`counterfactuals` (the index is built on first use, once)."""

    def _counterfactual_index(self) -> CounterfactualIndex:
        raw = self._raw()
        with self._cf_guard:
            if self._cf_index is None:
                try:
                    pairs = self.dm.counterfactual_pairs(self.split)
                except (ConfigError, DataError) as e:
                    raise ExplorerError(f"the {self.split} split's counterfactual pairs cannot be read: {e}",
                                        status=500) from None
                reason = None if pairs is not None else (
                    f"data '{self.dm.name}' names no counterfactual pairs for the {self.split} split (its data "
                    f"config has no 'counterfactuals' section listing '{self.split}'; for CEBaB start the server "
                    "with data=cebab to use the shipped one)")
                self._cf_index = CounterfactualIndex(pairs, raw.texts, reason)
            return self._cf_index

    def counterfactual_examples(self) -> dict[str, Any]:
        """Which examples of the split have a human counterfactual (``available`` false, with the ``reason``,
        when the data has no pairs)."""
        index = self._counterfactual_index()
        pairs = index.pairs
        return {"available": pairs is not None, "reason": index.reason, "split": self.split,
                "source": None if pairs is None else pairs.source, "n_pairs": 0 if pairs is None else len(pairs),
                "counts": {} if pairs is None else pairs.counts(),
                "examples": sorted(index.by_example)}

    def counterfactuals(self, example: Any) -> dict[str, Any]:
        """Every human counterfactual of example ``example``: per pair (``concept`` changed ``before`` ->
        ``after``, the edited text and, when it is an example too, its index) the label distributions
        ``before`` (N(x)), ``intervened`` (do(concept=after) on x) and ``counterfactual`` (N(x')), the
        ``predicted_change`` / ``actual_change`` and the ICaCE ``errors`` (L2, cosine, NormDiff), as
        :func:`~sparsecbm.interpret.causal_model.counterfactual_effect` computes them."""
        from sparsecbm.interpret.causal_model import CausalModel, counterfactual_effect

        truth = self.example(example)
        index = self._counterfactual_index()
        model = CausalModel(self.session, eps=self.eps)
        out = []
        with self.lock:
            for pair in index.by_example.get(example, []):
                effect = counterfactual_effect(model, truth["text"], pair.counterfactual_text, pair.concept,
                                               pair.after)
                out.append({"concept": pair.concept, "before_value": pair.before, "after_value": pair.after,
                            "direction": pair.direction, "family": pair.family, "goal": pair.goal,
                            "counterfactual_text": pair.counterfactual_text,
                            "counterfactual_example": index.example_of.get(pair.counterfactual_text), **effect})
        return {"example": example, "text": truth["text"], "split": self.split, "available": index.pairs is not None,
                "reason": index.reason, "source": None if index.pairs is None else index.pairs.source,
                "pairs": out}
