"""The explorer's engine (no web framework here): one checkpoint, a cache of encoded texts, predictions,
concept- and mask-level edits, explanations, and the data split's summary.

Speed: the backbone runs once per text (:meth:`Explorer.encode`, through the session's
:meth:`~sparsecbm.session.InferenceSession.encode`, caches its concept outputs, LRU); a concept edit only
re-runs the label head on the cached outputs, through the same code as :func:`sparsecbm.intervene`
(:func:`~sparsecbm.interpret.intervention.intervene_outputs`), so both give the same numbers.

The engine is split by what it serves: this module holds the checkpoint, the text cache, predictions and
concept edits; :mod:`~sparsecbm.serve.mask_edits` the mask-level edit, :mod:`~sparsecbm.serve.explanations`
attributions and exports, :mod:`~sparsecbm.serve.split_views` the data split's examples, metrics, curves and
subnetworks, :mod:`~sparsecbm.serve.counterfactuals` the human counterfactuals of an example (each a mixin of
:class:`Explorer`); :mod:`~sparsecbm.serve.core` the value types.

Safety: every use of the model holds one lock (the mask-level edit changes masks in place and restores
them before the lock is released), and a cached entry is never modified, so one request's edits never
reach another's. The split's pass runs in a background thread and takes the lock one small chunk at a
time, after any waiting request (:class:`~sparsecbm.serve.split_pass.ModelLock`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

import torch

from sparsecbm.interpret.intervention import (
    Edit,
    InterventionError,
    intervene_outputs,
    parse_set,
    require_concepts,
)
from sparsecbm.interpret.strategies import LOGIT_EPS, Bottleneck
from sparsecbm.results import cbm_title
from sparsecbm.serve.core import ExplorerError, Limits
from sparsecbm.serve.counterfactuals import Counterfactuals
from sparsecbm.serve.explanations import Explanations
from sparsecbm.serve.mask_edits import MaskEdits
from sparsecbm.serve.split_pass import ModelLock
from sparsecbm.serve.split_views import SplitViews
from sparsecbm.session import Encoded, InferenceSession

__all__ = ["Explorer", "ExplorerError", "Limits"]


class Explorer(MaskEdits, Explanations, SplitViews, Counterfactuals):
    """Everything the web app shows about one checkpoint.

    Args:
        session: The loaded checkpoint (:class:`~sparsecbm.session.InferenceSession`).
        datamodule: Its data (set up), for examples, metrics and curves; ``None`` disables those views.
        split: The split the data views read.
        limits: Request limits.
        eps: Logit mixing of a set distribution (see :mod:`sparsecbm.interpret.strategies`).
        mask_portion: Default fraction of a concept's kept mask entries swapped by a mask-level edit.
        random_seeds: Seeds of the ``random`` intervention policy in the curves.
    """

    def __init__(self, session: InferenceSession, datamodule=None, split: str = "test", limits: Limits | None = None,
                 eps: float = LOGIT_EPS, mask_portion: float = 0.05, random_seeds: int = 3):
        require_concepts(session.model)
        self.session, self.model = session, session.model
        self.concepts = session.concept_set
        self.dm, self.split = datamodule, split
        self.limits = limits or Limits()
        self.eps, self.mask_portion, self.random_seeds = float(eps), float(mask_portion), int(random_seeds)
        self.lock = ModelLock()
        self._cache: OrderedDict[str, Encoded] = OrderedDict()
        self._split_job, self._split_guard = None, threading.Lock()
        self._editor = None
        self._cf_index, self._cf_guard = None, threading.Lock()  # the split's counterfactual pairs (on first use)
        self._word_scheme: str | None = None
        self.backbone_runs = 0

    # ------------------------------------------------------------------ model facts
    @property
    def token_weights_kind(self) -> str | None:
        pooler = self.model.token_pooler
        return None if pooler is None else (getattr(pooler, "method", "") or None)

    def words(self, tokens: list[str]) -> list[dict[str, Any]]:
        """``tokens`` as words (:func:`sparsecbm.interpret.words.words`: word pieces merged; a word's weight
        is the sum of its pieces')."""
        from sparsecbm.interpret.words import scheme_of_tokenizer, words

        tokenizer = self.session.tokenizer
        if self._word_scheme is None:
            self._word_scheme = scheme_of_tokenizer(tokenizer)
        return words(tokens, self._word_scheme, set(tokenizer.all_special_tokens), tokenizer)

    @property
    def sparse(self) -> bool:
        return self.model.sparse

    @property
    def mask_level(self) -> bool:
        return self.sparse and not self.model.backbone.shared

    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out."""
        from sparsecbm.models.label_sparsity import label_weight

        ckpt, run = self.session.ckpt_path, self.session.run_dir
        return {
            "checkpoint": ckpt.name if ckpt else None,
            "run": run.name if run else None,
            # what the page calls this model: its run folder and checkpoint (every run's best is "best.ckpt")
            "title": f"{run.name}/{ckpt.name}" if ckpt and run else (ckpt.name if ckpt else "model"),
            "cbm": cbm_title(self.session.meta.cbm),
            "mode": self.session.mode,
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
        """Run the backbone on ``text`` once (the session's :meth:`~sparsecbm.session.InferenceSession.encode`);
        later calls with the same text read the cache."""
        with self.lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
            enc = self.session.encode([text])
            self.backbone_runs += 1
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
                "token_weights": None if enc.token_weights is None else enc.token_weights[k, 0].tolist(),
            })
        return {
            "label": str(prediction.label), "label_values": label_values,
            "label_probs": [prediction.label_probs[v] for v in self.concepts.label.values],
            "true_label": (truth or {}).get("label"),
            "concepts": concepts,
            "contributions_of": str(prediction.label), "bias": bias,
            "residual_contribution": contrib[-1] if contrib is not None and self.model.residual_dim else None,
            "tokens": enc.tokens[0], "words": self.words(enc.tokens[0]), "token_weights_kind": self.token_weights_kind,
            "truncated": enc.truncated[0],
        }

    def _edit(self, enc: Encoded, edits: list[Edit], truth) -> dict[str, Any]:
        result = intervene_outputs(self.model, enc.texts, enc.outputs, edits, self.eps)[0]
        bottleneck = Bottleneck.from_model(self.model, enc.outputs, self.eps)
        from sparsecbm.interpret.intervention import edit_targets

        targets = edit_targets(edits, self.concepts, 1)
        return {
            "text": enc.texts[0],
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
