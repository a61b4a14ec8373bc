"""The explorer's mask-level edit: "fix this concept's subnetwork" for one text, then restore the mask.

Mixed into :class:`~sparsecbm.serve.explorer.Explorer` (it reads the explorer's model, lock, cache and views).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import torch

from sparsecbm.serve.core import ExplorerError


class MaskEdits:
    """:meth:`mask_intervene` and the one :class:`~sparsecbm.sparsity.mask_editing.MaskEditor` it uses."""

    def _mask_editor(self):
        from sparsecbm.sparsity.mask_editing import MaskEditor

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
        text (:class:`~sparsecbm.sparsity.mask_editing.MaskEditor`), predict with it, restore the mask."""
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
                with editor.sb.reuse_unmasked_blocks(), torch.no_grad():  # the re-prediction replays the lower blocks
                    edit = editor.intervene(k, enc.batch["input_ids"], enc.batch["attention_mask"],
                                            spec.values.index(value), restore=False)
                    edited = self.model.concept_outputs(enc.batch["input_ids"], enc.batch["attention_mask"])
                    weights = (self.model.token_pooler.token_weights(edited.pooler).float().cpu()
                               if self.model.token_pooler is not None else None)
            finally:
                editor.load(saved, k)
                editor.portion = self.mask_portion
            after_enc = replace(enc, outputs=edited.apply(lambda t: t.detach().float().cpu()), token_weights=weights)
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
