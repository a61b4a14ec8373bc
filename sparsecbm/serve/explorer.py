"""The explorer's engine (no web framework here): one checkpoint, a cache of encoded texts, predictions,
concept- and mask-level edits, explanations, and the data split's summary.

Speed: the backbone runs once per text (:meth:`Explorer.encode` caches its concept outputs, LRU); a
concept edit only re-runs the label head on the cached outputs, through the same code as
:func:`sparsecbm.intervention.intervene` (:func:`~sparsecbm.interpret.intervention.intervene_outputs`),
so both give the same numbers.

Safety: every use of the model holds one lock (the mask-level edit changes masks in place and restores
them before the lock is released), and a cached entry is never modified, so one request's edits never
reach another's.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sparsecbm.checkpoint import InferenceSession
from sparsecbm.interpret.intervention import (
    Edit,
    InterventionError,
    intervene_outputs,
    parse_set,
    require_concepts,
)
from sparsecbm.interpret.strategies import LOGIT_EPS, Bottleneck
from sparsecbm.models.cbm import ConceptOutputs


class ExplorerError(ValueError):
    """A request the explorer cannot serve; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Encoded:
    """One text after the backbone: what every later edit of it reads (never modified)."""

    text: str
    batch: dict[str, torch.Tensor]  # input_ids / attention_mask [1, T]
    tokens: list[str]
    outputs: ConceptOutputs  # on CPU, float
    token_weights: torch.Tensor | None  # [K, T]: what each concept read of each token (attention / gates)
    truncated: bool
    ms: float  # backbone + heads, milliseconds


@dataclass
class Limits:
    """Request limits (``conf/serve.yaml: limits``)."""

    max_text_chars: int = 20_000
    max_body_bytes: int = 262_144
    cache_size: int = 256
    max_examples: int = 200


class Explorer:
    """Everything the web app shows about one checkpoint.

    Args:
        session: The loaded checkpoint.
        datamodule: Its data (set up), for examples, metrics and curves; ``None`` disables those views.
        split: The split the data views read.
        limits: Request limits.
        eps: Logit mixing of a set distribution (see :mod:`sparsecbm.interpret.strategies`).
        mask_portion: Default fraction of a concept's kept mask entries swapped by a mask-level edit.
        random_seeds: Seeds of the ``random`` intervention policy in the curves.
    """

    def __init__(self, session: InferenceSession, datamodule=None, split: str = "test", limits: Limits | None = None,
                 eps: float = LOGIT_EPS, mask_portion: float = 0.05, random_seeds: int = 3):
        require_concepts(session.module)
        self.session, self.module, self.model = session, session.module, session.module.model
        self.concepts = session.concept_set
        self.dm, self.split = datamodule, split
        self.limits = limits or Limits()
        self.eps, self.mask_portion, self.random_seeds = float(eps), float(mask_portion), int(random_seeds)
        self.lock = threading.RLock()
        self._cache: OrderedDict[str, Encoded] = OrderedDict()
        self._split_cache: dict[str, Any] | None = None
        self._editor = None
        self.backbone_runs = 0

    # ------------------------------------------------------------------ model facts
    @property
    def token_weights_kind(self) -> str | None:
        pooler = self.model.token_pooler
        return None if pooler is None else (getattr(pooler, "method", "") or None)

    @property
    def sparse(self) -> bool:
        from sparsecbm.sparsity.backbone import SubnetworkBackbone

        return isinstance(self.model.backbone, SubnetworkBackbone)

    @property
    def mask_level(self) -> bool:
        return self.sparse and not self.model.backbone.shared

    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out."""
        from sparsecbm.models.label_sparsity import label_weight

        return {
            "checkpoint": self.session.ckpt_path.name if self.session.ckpt_path else None,
            "run": self.session.run_dir.name if self.session.run_dir else None,
            "mode": self.module.mode,
            "activation": self.model.activation,
            "label_head": "linear" if label_weight(self.model.label_head) is not None else "mlp",
            "backbone": self.model.backbone.name_or_path if hasattr(self.model.backbone, "name_or_path") else None,
            "label": {"name": "label", "values": [str(v) for v in self.concepts.label.values]},
            "concepts": [{"name": c.name, "values": list(c.values)} for c in self.concepts],
            "token_weights": self.token_weights_kind,
            "sparse": self.sparse,
            "mask_level": self.mask_level,
            "mask_portion": self.mask_portion,
            "data": None if self.dm is None else {"name": self.dm.name, "split": self.split,
                                                  "size": len(self.dm.raw[self.split])},
            "max_length": self.session.max_length,
            "limits": asdict(self.limits),
            "logit_eps": self.eps,
        }

    # ---------------------------------------------------------------------- inputs
    def check_text(self, text: Any) -> str:
        if not isinstance(text, str):
            raise ExplorerError(f"'text' must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ExplorerError("'text' is empty: type or paste a text, or pick an example")
        if len(text) > self.limits.max_text_chars:
            raise ExplorerError(f"'text' has {len(text)} characters; the limit is {self.limits.max_text_chars} "
                                "(limits.max_text_chars)", status=413)
        return text

    def example(self, index: Any) -> dict[str, Any]:
        """Example ``index`` of the split: text, true label and concepts."""
        raw = self._raw()
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(raw):
            raise ExplorerError(f"example {index!r} does not exist: the {self.split} split has examples "
                                f"0..{len(raw) - 1}", status=404)
        c = self.concepts
        return {"index": index, "text": raw.texts[index], "label": str(c.label.values[raw.labels[index]]),
                "concepts": {spec.name: spec.values[v] for spec, v in zip(c.concepts, raw.concepts[index])}
                if raw.concepts and raw.concepts[index] else {}}

    def resolve(self, text: Any = None, example: Any = None) -> tuple[str, dict[str, Any] | None]:
        """``(text, truth)`` from a request naming a text or an example of the split (exactly one)."""
        if (text is None) == (example is None):
            raise ExplorerError("give exactly one of 'text' (a string) or 'example' (an index into the split)")
        if example is not None:
            ex = self.example(example)
            return ex["text"], ex
        return self.check_text(text), None

    def encode(self, text: str) -> Encoded:
        """Run the backbone on ``text`` once; later calls with the same text read the cache."""
        with self.lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
            start = time.perf_counter()
            batch = self.session.encode([text])
            with torch.no_grad():
                outputs = self.model.concept_outputs(batch["input_ids"], batch["attention_mask"])
                weights = None
                if self.model.token_pooler is not None and outputs.pooler is not None:
                    weights = self.model.token_pooler.token_weights(outputs.pooler)[:, 0].float().cpu()
            ms = 1000 * (time.perf_counter() - start)
            self.backbone_runs += 1
            ids = batch["input_ids"][0].tolist()
            limit = self.session.max_length
            full = len(self.session.tokenizer(text, truncation=True, max_length=limit + 1)["input_ids"])
            enc = Encoded(text=text, batch={k: v.cpu() for k, v in batch.items()},
                          tokens=self.session.tokenizer.convert_ids_to_tokens(ids),
                          outputs=outputs.apply(lambda t: t.detach().float().cpu()), token_weights=weights,
                          truncated=full > len(ids), ms=ms)
            self._cache[text] = enc
            while len(self._cache) > self.limits.cache_size:
                self._cache.popitem(last=False)
            return enc

    # ------------------------------------------------------------------ predictions
    def _contributions(self, bottleneck: Bottleneck, targets, label: int) -> tuple[list[float] | None, float | None]:
        """Each concept's (and the residual's) contribution to ``label``'s logit from the label head's actual
        input (edited where ``targets`` say), and the bias: they sum to the logit. ``None`` for an MLP head."""
        from sparsecbm.models.label_sparsity import label_weight

        w = label_weight(self.model.label_head)
        if w is None:
            return None, None
        inputs = bottleneck.inputs(targets)
        if bottleneck.residual is not None:
            inputs = torch.cat([inputs, bottleneck.residual], dim=-1)
        per_col = inputs[0] * w[label].detach().float().cpu()
        blocks = self.model.concept_blocks() + ([self.model.residual_block] if self.model.residual_block else [])
        return [float(per_col[s].sum()) for s in blocks], float(self.model.label_head.bias.detach()[label])

    def _view(self, enc: Encoded, prediction, bottleneck: Bottleneck, targets, edits: list[Edit],
              truth: dict[str, Any] | None) -> dict[str, Any]:
        label_values = [str(v) for v in self.concepts.label.values]
        label_index = label_values.index(str(prediction.label))
        contrib, bias = self._contributions(bottleneck, targets, label_index)
        edited = {e.target: e for e in edits}
        concepts = []
        for k, spec in enumerate(self.concepts):
            probs = prediction.concept_probs[spec.name]
            concepts.append({
                "name": spec.name, "values": list(spec.values), "probs": [probs[v] for v in spec.values],
                "predicted": prediction.concepts[spec.name],
                "contribution": None if contrib is None else contrib[k],
                "edited": spec.name in edited,
                "true": (truth or {}).get("concepts", {}).get(spec.name),
                "token_weights": None if enc.token_weights is None else enc.token_weights[k].tolist(),
            })
        return {
            "label": str(prediction.label), "label_values": label_values,
            "label_probs": [prediction.label_probs[v] for v in self.concepts.label.values],
            "true_label": (truth or {}).get("label"),
            "concepts": concepts,
            "contributions_of": str(prediction.label), "bias": bias,
            "residual_contribution": contrib[-1] if contrib is not None and self.model.residual_dim else None,
            "tokens": enc.tokens, "token_weights_kind": self.token_weights_kind, "truncated": enc.truncated,
        }

    def _edit(self, enc: Encoded, edits: list[Edit], truth) -> dict[str, Any]:
        result = intervene_outputs(self.module, [enc.text], enc.outputs, edits, self.eps)[0]
        bottleneck = Bottleneck.from_model(self.model, enc.outputs, self.eps)
        from sparsecbm.interpret.intervention import edit_targets

        targets = edit_targets(edits, self.concepts, 1)
        return {
            "text": enc.text,
            "edits": [asdict(e) for e in edits],
            "before": self._view(enc, result.before, bottleneck, None, [], truth),
            "after": self._view(enc, result.after, bottleneck, targets, edits, truth),
            "changed": result.changed(),
        }

    def predict(self, text: Any = None, example: Any = None) -> dict[str, Any]:
        """Label and concept distributions, contributions, tokens and the model's token weights."""
        text, truth = self.resolve(text, example)
        start = time.perf_counter()
        with self.lock:
            cached = text in self._cache
            enc = self.encode(text)
            out = self._edit(enc, [], truth)["before"]
        out.update({"text": text, "example": None if truth is None else truth["index"], "cached": cached,
                    "ms": {"server": 1000 * (time.perf_counter() - start), "backbone": enc.ms}})
        return out

    def intervene(self, set: Any, text: Any = None, example: Any = None) -> dict[str, Any]:
        """Set concepts (``{concept: value | [probs] | {value: p}}``, as :func:`parse_set` reads) and re-run the
        label head on the cached concept outputs; ``before`` / ``after`` views."""
        text, truth = self.resolve(text, example)
        if set is None or (isinstance(set, dict) and not set):
            edits: list[Edit] = []
        else:
            try:
                edits = parse_set(set, self.concepts)
            except InterventionError as e:
                raise ExplorerError(str(e)) from None
        start = time.perf_counter()
        with self.lock:
            cached = text in self._cache
            enc = self.encode(text)
            edit_start = time.perf_counter()
            out = self._edit(enc, edits, truth)
            edit_ms = 1000 * (time.perf_counter() - edit_start)
        out.update({"example": None if truth is None else truth["index"], "cached": cached,
                    "ms": {"server": 1000 * (time.perf_counter() - start), "edit": edit_ms,
                           "backbone": None if cached else enc.ms}})
        return out

    # -------------------------------------------------------------- mask level
    def _mask_editor(self):
        from sparsecbm.sparsity.intervention import MaskEditor

        if not self.mask_level:
            raise ExplorerError("mask-level intervention needs a model trained with per-concept subnetworks "
                                "(sparsity=structured|neuron|head|magnitude|movement|obert, not shared); "
                                "this checkpoint has " + ("one shared mask" if self.sparse else "none"), status=400)
        if self._editor is None:
            self._editor = MaskEditor(self.model, self.mask_portion)
        return self._editor

    def mask_intervene(self, concept: Any, value: Any, text: Any = None, example: Any = None,
                       portion: Any = None) -> dict[str, Any]:
        """"Fix this concept's subnetwork": prune-and-grow the concept's own mask toward ``value`` for this
        text (:class:`~sparsecbm.sparsity.intervention.MaskEditor`), predict with it, restore the mask."""
        text, truth = self.resolve(text, example)
        if concept not in self.concepts.names:
            raise ExplorerError(f"unknown concept {concept!r}; valid concepts: {self.concepts.names}")
        spec = self.concepts[concept]
        if value not in spec.values:
            raise ExplorerError(f"unknown value {value!r} for concept '{concept}'; valid values of '{concept}': "
                                f"{list(spec.values)}")
        portion = self.mask_portion if portion is None else portion
        if isinstance(portion, bool) or not isinstance(portion, (int, float)) or not 0 < portion < 1:
            raise ExplorerError(f"'portion' must be a number in (0, 1), got {portion!r}")
        start = time.perf_counter()
        with self.lock:
            editor = self._mask_editor()
            enc = self.encode(text)
            k = self.concepts.position(concept)
            saved = editor.snapshot(k)
            editor.portion = float(portion)
            try:
                edit = editor.intervene(k, enc.batch["input_ids"], enc.batch["attention_mask"],
                                        spec.values.index(value), restore=False)
                with torch.no_grad():
                    edited = self.model.concept_outputs(enc.batch["input_ids"], enc.batch["attention_mask"])
                    weights = (self.model.token_pooler.token_weights(edited.pooler)[:, 0].float().cpu()
                               if self.model.token_pooler is not None else None)
            finally:
                editor.load(saved, k)
                editor.portion = self.mask_portion
            after_enc = Encoded(enc.text, enc.batch, enc.tokens, edited.apply(lambda t: t.detach().float().cpu()),
                                weights, enc.truncated, enc.ms)
            before = self._edit(enc, [], truth)["before"]
            after = self._edit(after_enc, [], truth)["before"]
        changed = [c["name"] for c, d in zip(before["concepts"], after["concepts"]) if c["predicted"] != d["predicted"]]
        return {
            "text": text, "example": None if truth is None else truth["index"],
            "edit": asdict(edit) | {"value": value, "portion": float(portion)},
            "before": before, "after": after,
            "changed": {"concepts": changed,
                        "label": None if before["label"] == after["label"]
                        else {"before": before["label"], "after": after["label"]}},
            "ms": {"server": 1000 * (time.perf_counter() - start), "mask_edit": 1000 * edit.seconds},
        }

    # ------------------------------------------------------------- explanations
    def explain(self, method: str = "ours", text: Any = None, example: Any = None,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Token attributions per concept (``method``, see :mod:`sparsecbm.interpret.attribution`), with their cost."""
        from sparsecbm.interpret.attribution import METHODS, resolve_name
        from sparsecbm.interpret.explainer import explain_batch

        if method not in METHODS:
            raise ExplorerError(f"unknown attribution method {method!r}; valid methods: {list(METHODS)}")
        text, truth = self.resolve(text, example)
        with self.lock:
            enc = self.encode(text)
            start = time.perf_counter()
            try:
                e = explain_batch(self.module, dict(enc.batch), self.session.tokenizer, method, [text], **(options or {}))[0]
                name = resolve_name(method, self.module)
            except (ValueError, KeyError) as err:
                raise ExplorerError(f"method {method!r} does not apply to this model: {err}") from None
            seconds = time.perf_counter() - start
        if truth is not None:
            e.true_label = truth["label"]
            for c in e.concepts:
                c.true = truth["concepts"].get(c.name)
        return {"method": name, "seconds": seconds, "explanation": asdict(e)}

    def export(self, fmt: str = "json", method: str = "ours", text: Any = None, example: Any = None) -> str:
        """The current text as the explain command writes it: ``explanations.json`` or ``report.html``."""
        import json

        from sparsecbm.interpret.explainer import label_layer_summary
        from sparsecbm.interpret.explanation import Explanation, ExplanationSet
        from sparsecbm.interpret.report import render_html
        from sparsecbm.sparsity.attribution import subnetwork_summary

        if fmt not in ("json", "html"):
            raise ExplorerError(f"unknown export format {fmt!r}; expected 'json' or 'html'")
        res = self.explain(method, text, example)
        with self.lock:
            es = ExplanationSet([Explanation.from_dict(res["explanation"])], method=res["method"],
                                checkpoint=str(self.session.ckpt_path) if self.session.ckpt_path else None,
                                label_layer=label_layer_summary(self.module),
                                label_sparsity=self.module.cbm_cfg.get("label_sparsity", "none"),
                                subnetwork=subnetwork_summary(self.model),
                                meta={"source": "sparsecbm.serve", "seconds": res["seconds"]})
        return json.dumps(es.to_dict(), indent=1) if fmt == "json" else render_html(es)

    # ------------------------------------------------------------------ subnetworks
    def subnetworks(self) -> dict[str, Any]:
        """Per concept the heads and FFN neurons kept per layer, sparsity per layer, and mask overlaps."""
        if not self.sparse:
            return {"available": False, "reason": "this checkpoint has no per-concept subnetworks "
                                                  "(train with sparsity=structured|neuron|head|magnitude|...)"}
        from sparsecbm.sparsity.report import subnetwork_stats

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
        import json

        run_dir = self.session.run_dir
        path = None if run_dir is None else run_dir / "results.json"
        if path is None or not path.is_file():
            return None
        try:
            sub = json.loads(path.read_text()).get("subnetworks") or {}
        except (OSError, ValueError):
            return None
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

    def _split_pass(self) -> dict[str, Any]:
        """One backbone pass over the split (once, cached): predictions for the filters, metrics, curves."""
        from sparsecbm.interpret.curves import collect, intervention_curve, task_metrics

        self._raw()
        with self.lock:
            if self._split_cache is not None:
                return self._split_cache
            start = time.perf_counter()
            outputs, truth, labels = collect(self.module, self.dm.loader(self.split))
            bottleneck = Bottleneck.from_model(self.model, outputs, self.eps)
            label_probs = bottleneck.label_probs()
            concept_pred = torch.stack([p.argmax(-1) for p in bottleneck.concept_probs()], 1)
            curve = intervention_curve(bottleneck, truth, labels, self.concepts.names,
                                       seeds=range(self.random_seeds))
            acc, f1 = task_metrics(label_probs, labels)
            self._split_cache = {
                "label_probs": label_probs, "label_pred": label_probs.argmax(-1), "labels": labels,
                "concept_pred": concept_pred, "truth": truth, "curve": curve, "task": {"acc": acc, "f1": f1},
                "seconds": time.perf_counter() - start,
            }
            return self._split_cache

    def examples(self, wrong_label: bool | None = None, wrong_concept: str | None = None, label: str | None = None,
                 concept: str | None = None, value: str | None = None, q: str | None = None, offset: int = 0,
                 limit: int = 50) -> dict[str, Any]:
        """Examples of the split matching every filter given (``concept``+``value``: the true value)."""
        raw = self._raw()
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
        sp = self._split_pass() if needs_predictions or self._split_cache is not None else None
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
            if sp is not None:
                row["predicted"] = names[int(sp["label_pred"][i])]
                row["wrong_concepts"] = [c.names[k] for k in
                                         torch.nonzero(sp["concept_pred"][i] != sp["truth"][i]).flatten().tolist()]
            out.append(row)
        return {"split": self.split, "total": len(raw), "matched": len(rows), "offset": offset, "examples": out}

    def dataset(self) -> dict[str, Any]:
        """The split's metrics (task and per concept, with confusion matrices) and the run's reported numbers
        (its ``results.json``, when the checkpoint sits in its run folder: ceiling / leakage summary)."""
        import json

        from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_f1_score

        sp = self._split_pass()
        per_concept = {}
        for k, spec in enumerate(self.concepts):
            pred, true = sp["concept_pred"][:, k], sp["truth"][:, k]
            per_concept[spec.name] = {
                "values": list(spec.values), "acc": float((pred == true).float().mean()),
                "f1": float(multiclass_f1_score(pred, true, spec.cardinality, average="macro")),
                "confusion": multiclass_confusion_matrix(pred, true, spec.cardinality).tolist(),  # rows: true
            }
        labels = [str(v) for v in self.concepts.label.values]
        run = None
        run_dir = self.session.run_dir
        if run_dir is not None and (run_dir / "results.json").is_file():
            try:
                saved = json.loads((run_dir / "results.json").read_text())
                run = {key: saved.get(key) for key in ("val", "test", "reference", "model", "data", "run")}
            except (OSError, ValueError):
                run = None
        return {
            "split": self.split, "n": int(sp["labels"].shape[0]), "seconds": sp["seconds"],
            "task": sp["task"], "labels": labels,
            "label_confusion": multiclass_confusion_matrix(sp["label_pred"], sp["labels"], len(labels)).tolist(),
            "concepts": per_concept,
            "bottleneck": ((run or {}).get("test") or {}).get("bottleneck"),
            "run_results": run,
        }

    def curves(self) -> dict[str, Any]:
        """Task accuracy / macro-F1 vs number of concepts set to the truth, per policy, on the split."""
        sp = self._split_pass()
        return {"split": self.split, **sp["curve"].to_dict()}
