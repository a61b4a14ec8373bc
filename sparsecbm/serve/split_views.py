"""The explorer's data-split views: one pass over the split (predictions, metrics, intervention curves;
computed in the background, :mod:`sparsecbm.serve.split_pass`), the example browser with its filters, the
split's metrics, and the concept subnetworks.

Mixed into :class:`~sparsecbm.serve.explorer.Explorer` (it reads the explorer's session, data and lock).
Metrics are :mod:`sparsecbm.metrics`' definitions; the run's own numbers come from its
``results.json`` (:class:`~sparsecbm.run_result.RunResult`).
"""

from __future__ import annotations

from typing import Any

import torch

from sparsecbm.interpret.strategies import Bottleneck
from sparsecbm.serve.core import ExplorerError
from sparsecbm.serve.split_pass import SplitPass


class SplitViews:
    """:meth:`examples`, :meth:`dataset`, :meth:`curves` and :meth:`subnetworks`."""

    # ------------------------------------------------------------------ subnetworks
    def subnetworks(self) -> dict[str, Any]:
        """Per concept the heads and FFN neurons kept per layer, sparsity per layer, and mask overlaps."""
        if not self.sparse:
            return {"available": False, "reason": "this checkpoint has no per-concept subnetworks "
                                                  "(train with sparsity=structured|neuron|head|magnitude|...)"}
        from sparsecbm.sparsity.subnetwork_stats import subnetwork_stats

        with self.lock:
            stats = subnetwork_stats(self.model.backbone, self.concepts.names)
        names = self.concepts.names
        overlap = [[1.0 if a == b else 0.0 for b in names] for a in names]
        for key, per_block in stats["jaccard"].items():
            a, b = key.split("|")
            mean = sum(per_block.values()) / max(len(per_block), 1)
            overlap[names.index(a)][names.index(b)] = overlap[names.index(b)][names.index(a)] = mean
        return {"available": True, **stats, "overlap_matrix": {"concepts": names, "mean_jaccard": overlap},
                "cross_mask": self._run_cross_mask()}

    def _run_cross_mask(self) -> dict[str, Any] | None:
        """The training run's cross-mask matrix (``results.json: subnetworks.cross_mask``: concept i's test
        macro-F1 with its head reading the backbone under mask j) and specificity, when the run has them."""
        result = self.session.run_result()
        if result is None:
            return None
        sub = result.subnetworks or {}
        if not sub.get("cross_mask"):
            return None
        return {"concepts": self.concepts.names, "matrix": sub["cross_mask"], "specificity": sub.get("specificity"),
                "own_mask_best": sub.get("own_mask_best"), "split": "test", "metric": "macro-F1"}

    # ----------------------------------------------------------------- the split
    def _raw(self):
        if self.dm is None:
            raise ExplorerError("no data: start the server with data.root=DIR (or a checkpoint whose data "
                                "config points at existing files) to browse examples", status=404)
        return self.dm.raw[self.split]

    def split_pass(self):
        """The :class:`~sparsecbm.serve.split_pass.SplitPass` of the split (made on first use, not started)."""
        from sparsecbm.session import collect

        raw = self._raw()
        with self._split_guard:
            if self._split_job is None:
                size = self.limits.split_batch_size
                self._split_job = SplitPass(
                    len(raw), lambda: self.dm.loader(self.split, batch_size=size),
                    lambda batch: collect(self.model, [batch]), self._split_results, self.lock)
            return self._split_job

    @torch.no_grad()
    def _split_results(self, split) -> dict[str, Any]:
        """Predictions for the filters, metrics and curves from the split's outputs. Without the model lock:
        it reads only the label head, which nothing in the explorer changes."""
        from sparsecbm.interpret.curves import intervention_curve, task_metrics

        truth, labels = split.truth, split.labels
        bottleneck = Bottleneck.from_model(self.model, split.outputs, self.eps)
        label_probs = bottleneck.label_probs()
        concept_pred = torch.stack([p.argmax(-1) for p in bottleneck.concept_probs()], 1)
        curve = intervention_curve(bottleneck, truth, labels, self.concepts.names, seeds=range(self.random_seeds))
        acc, f1 = task_metrics(label_probs, labels)
        return {"label_probs": label_probs, "label_pred": label_probs.argmax(-1), "labels": labels,
                "concept_pred": concept_pred, "truth": truth, "curve": curve, "task": {"acc": acc, "f1": f1}}

    def _split_pass(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """``(results, progress)``: the pass's results, or ``None`` while it runs (started here); ``progress`` is
        ``{"split", "status": "running", "done": n, "total": N, ...}`` (see :meth:`SplitPass.poll`)."""
        job = self.split_pass()
        progress = {"split": self.split, **job.poll()}
        return (job.result if progress["status"] == "done" else None), progress

    def examples(self, wrong_label: bool | None = None, wrong_concept: str | None = None, label: str | None = None,
                 concept: str | None = None, value: str | None = None, q: str | None = None, offset: int = 0,
                 limit: int = 50, counterfactual: bool | None = None) -> dict[str, Any]:
        """Examples of the split matching every filter given (``concept``+``value``: the true value;
        ``counterfactual``: has a human counterfactual, :mod:`~sparsecbm.serve.counterfactuals`)."""
        raw = self._raw()
        cf = self._counterfactual_index().by_example if counterfactual is not None else None
        c = self.concepts
        if wrong_concept not in (None, "", "any") and wrong_concept not in c.names:
            raise ExplorerError(f"wrong_concept: unknown concept {wrong_concept!r}; valid: 'any' or {c.names}")
        if label not in (None, "") and label not in [str(v) for v in c.label.values]:
            raise ExplorerError(f"label: unknown label {label!r}; valid labels: {[str(v) for v in c.label.values]}")
        if (concept in (None, "")) != (value in (None, "")):
            raise ExplorerError("filter by concept value with both 'concept' and 'value'")
        if concept not in (None, ""):
            if concept not in c.names:
                raise ExplorerError(f"concept: unknown concept {concept!r}; valid concepts: {c.names}")
            if value not in c[concept].values:
                raise ExplorerError(f"value: unknown value {value!r} for concept '{concept}'; "
                                    f"valid values: {list(c[concept].values)}")
        if not 1 <= limit <= self.limits.max_examples or offset < 0:
            raise ExplorerError(f"'limit' must be in 1..{self.limits.max_examples} and 'offset' >= 0")
        needs_predictions = wrong_label is not None or wrong_concept not in (None, "")
        if needs_predictions:
            sp, progress = self._split_pass()
            if sp is None:  # the prediction filters wait for the pass: the page polls until it is done
                return {**progress, "matched": None, "examples": []}
        else:
            job = self.split_pass()
            sp = job.result if job.status == "done" else None
        names = [str(v) for v in c.label.values]
        rows = []
        for i, text in enumerate(raw.texts):
            truth = raw.concepts[i] if raw.concepts else None
            if label not in (None, "") and names[raw.labels[i]] != label:
                continue
            if concept not in (None, "") and (truth is None or c[concept].values[truth[c.position(concept)]] != value):
                continue
            if q and q.lower() not in text.lower():
                continue
            if cf is not None and (i in cf) != counterfactual:
                continue
            if sp is not None:
                wrong_l = bool(sp["label_pred"][i] != sp["labels"][i])
                wrong_c = [c.names[k] for k in torch.nonzero(sp["concept_pred"][i] != sp["truth"][i]).flatten().tolist()]
                if wrong_label is not None and wrong_l != wrong_label:
                    continue
                if wrong_concept not in (None, "") and not (wrong_c if wrong_concept == "any" else wrong_concept in wrong_c):
                    continue
            rows.append(i)
        page = rows[offset: offset + limit]
        out = []
        for i in page:
            row = {"index": i, "text": raw.texts[i][:300], "label": names[raw.labels[i]]}
            if self._cf_index is not None:  # once the pairs are known (the page asks for them first)
                row["counterfactuals"] = len(self._cf_index.by_example.get(i, ()))
            if sp is not None:
                row["predicted"] = names[int(sp["label_pred"][i])]
                row["wrong_concepts"] = [c.names[k] for k in
                                         torch.nonzero(sp["concept_pred"][i] != sp["truth"][i]).flatten().tolist()]
            out.append(row)
        return {"status": "done", "split": self.split, "total": len(raw), "matched": len(rows), "offset": offset,
                "examples": out}

    def dataset(self) -> dict[str, Any]:
        """The split's metrics (task and per concept, with confusion matrices) and the run's reported numbers
        (its ``results.json``, when the checkpoint sits in its run folder: ceiling / leakage summary).

        Answers at once: while the background pass runs, with its progress (:meth:`_split_pass`)."""
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        from sparsecbm.metrics import accuracy, macro_f1

        sp, progress = self._split_pass()
        if sp is None:
            return progress
        per_concept = {}
        for k, spec in enumerate(self.concepts):
            pred, true = sp["concept_pred"][:, k], sp["truth"][:, k]
            per_concept[spec.name] = {
                "values": list(spec.values), "acc": accuracy(pred, true, spec.cardinality),
                "f1": macro_f1(pred, true, spec.cardinality),
                "confusion": multiclass_confusion_matrix(pred, true, spec.cardinality).tolist(),  # rows: true
            }
        labels = [str(v) for v in self.concepts.label.values]
        result = self.session.run_result()
        run = None if result is None else {key: getattr(result, key)
                                           for key in ("val", "test", "reference", "model", "data", "run")}
        return {
            **progress, "n": int(sp["labels"].shape[0]), "seconds": sp["seconds"],
            "task": sp["task"], "labels": labels,
            "label_confusion": multiclass_confusion_matrix(sp["label_pred"], sp["labels"], len(labels)).tolist(),
            "concepts": per_concept,
            "bottleneck": ((run or {}).get("test") or {}).get("bottleneck"),
            "run_results": run,
        }

    def curves(self) -> dict[str, Any]:
        """Task accuracy / macro-F1 vs number of concepts set to the truth, per policy, on the split (the
        pass's progress while it runs)."""
        sp, progress = self._split_pass()
        return progress if sp is None else {**progress, **sp["curve"].to_dict()}
