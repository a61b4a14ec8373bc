"""Subnetwork-level intervention (SparseCBM): correct a concept by editing its own mask.

For one example whose concept ``k`` is predicted wrong, concept ``k``'s loss against its right
value is backpropagated to its mask (the masks are treated as {0,1} variables, ``dL/dm``). Flipping
``m_i`` changes the loss by about ``dL/dm_i · (new - old)``, so in every masked layer the kept
weights (or units) whose removal lowers the loss most are pruned and as many pruned ones whose
return lowers it most are grown: ``mask_portion`` of the kept entries per layer are swapped, and
the total sparsity is unchanged. Only concept ``k``'s mask changes.

``restore=True`` (per example) puts the mask back afterwards; ``restore=False`` keeps it (online
adaptation) until :meth:`MaskEditor.reset`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sparsecbm.sparsity.backbone import SubnetworkBackbone


@dataclass
class MaskEdit:
    """What one mask-level intervention did."""

    concept: str
    target: int
    before_probs: list[float]
    after_probs: list[float]
    swapped: int
    sparsity_before: float
    sparsity_after: float
    seconds: float
    rectified: bool
    per_layer: dict[str, int] = field(default_factory=dict)


class MaskEditor:
    """Edits concept masks of a model with a :class:`SubnetworkBackbone`.

    Args:
        model: A ``ConceptBottleneckModel`` whose backbone has per-concept subnetworks.
        mask_portion: Fraction of each layer's kept entries of the concept swapped per intervention.
    """

    def __init__(self, model, mask_portion: float = 0.05):
        sb = model.backbone
        if not isinstance(sb, SubnetworkBackbone):
            raise ValueError("mask-level intervention needs a model trained with per-concept subnetworks "
                             "(sparsity=magnitude|movement|obert|neuron|head); this one has none")
        if sb.shared:
            raise ValueError("mask-level intervention edits one concept's own mask; sparsity.shared=true has one mask")
        if not 0 < mask_portion < 1:
            raise ValueError(f"mask_portion must be in (0, 1), got {mask_portion}")
        self.model, self.sb, self.portion = model, sb, float(mask_portion)
        self._original = self.snapshot()

    # ----------------------------------------------------------------- masks
    def _targets(self) -> dict[str, torch.nn.Module]:
        return self.sb.mask_targets()

    def snapshot(self, concept: int | None = None) -> dict[str, torch.Tensor]:
        """Copies of the masks (of one concept, or all)."""
        out = {}
        for name, t in self._targets().items():
            out[name] = (t.masks if concept is None else t.masks[concept]).clone()
        return out

    def load(self, masks: dict[str, torch.Tensor], concept: int | None = None) -> None:
        for name, t in self._targets().items():
            full = t.masks.clone()
            if concept is None:
                full.copy_(masks[name])
            else:
                full[concept] = masks[name]
            t.set_masks(full)

    def reset(self) -> None:
        """Undo every kept (online) edit: back to the masks the model was loaded with."""
        self.load(self._original)

    def _unit_size(self, name: str) -> int:
        """Weights per mask entry (1 for unstructured; rows x inputs of a unit otherwise, for sparsity)."""
        if self.sb.granularity == "unstructured":
            return 1
        group = self.sb.unit_groups()[name]
        return group.unit_size

    # ------------------------------------------------------------ gradients
    def mask_gradients(self, concept: int, input_ids, attention_mask, target: torch.Tensor):
        """``dL/dm`` of concept ``concept``'s cross-entropy to ``target`` for its mask, per masked target,
        and the concept's logits from that pass."""
        sb = self.sb
        layers = sb.masked_layers()
        sb.state.mask_grad = True
        try:
            with torch.enable_grad():
                logits = self.model.single_concept_logits(concept, input_ids, attention_mask)
                loss = F.cross_entropy(logits, target)
                vars_ = {n: lyr.mask_var for n, lyr in layers.items() if lyr.mask_var is not None}
                grads = torch.autograd.grad(loss, list(vars_.values()), allow_unused=True)
                logits = logits.detach()
        finally:
            sb.state.mask_grad = False
            for lyr in layers.values():
                lyr.mask_var = None
        by_layer = {n: (g if g is not None else torch.zeros_like(v)) for (n, v), g in zip(vars_.items(), grads)}
        if sb.granularity == "unstructured":
            return by_layer, logits
        out = {}
        for gname, group in sb.unit_groups().items():
            prefix = gname.rsplit(".", 1)[0] + "."
            rows = sum(g for n, g in by_layer.items() if n.startswith(prefix) and layers[n].group is group)
            out[gname] = rows.view(group.n_units, group.unit_size).sum(1)
        return out, logits

    # ----------------------------------------------------------------- edit
    @torch.no_grad()
    def concept_probs(self, concept: int, input_ids, attention_mask) -> torch.Tensor:
        """Concept ``concept``'s probabilities from its own subnetwork (structured: only its kept units run)."""
        state = self.sb.state
        state.gather_single = True
        try:
            return self.model.single_concept_logits(concept, input_ids, attention_mask).softmax(-1)
        finally:
            state.gather_single = False

    def intervene(self, concept: int, input_ids, attention_mask, target: int, restore: bool = True) -> MaskEdit:
        """Prune-and-grow ``mask_portion`` of concept ``concept``'s mask per layer toward ``target`` (one example)."""
        if input_ids.shape[0] != 1:
            raise ValueError(f"mask-level intervention works per example; got a batch of {input_ids.shape[0]}")
        was_training = self.model.training
        if was_training:
            self.model.eval()
        t0 = time.perf_counter()
        try:
            with self.sb.reuse_unmasked_blocks():  # the lower blocks run once for both passes
                return self._intervene(concept, input_ids, attention_mask, target, restore, t0)
        finally:
            if was_training:
                self.model.train()

    def _intervene(self, concept: int, input_ids, attention_mask, target: int, restore: bool, t0: float) -> MaskEdit:
        saved = self.snapshot(concept)
        grads, logits = self.mask_gradients(concept, input_ids, attention_mask, torch.tensor([target]))
        before = logits[0].softmax(-1)
        per_layer, new_masks = {}, dict(saved)
        with torch.no_grad():
            for name in self._targets():
                current = saved[name]
                g = grads[name].reshape(current.shape)
                kept, pruned = current.reshape(-1), ~current.reshape(-1)
                n = min(max(1, round(self.portion * int(kept.sum()))), int(pruned.sum()), int(kept.sum()))
                if n == 0:
                    continue
                flat = g.reshape(-1)
                # removing a kept entry changes the loss by -g, adding a pruned one by +g
                remove_gain = torch.where(kept, -flat, torch.full_like(flat, float("inf")))
                add_gain = torch.where(pruned, flat, torch.full_like(flat, float("inf")))
                new = current.reshape(-1).clone()
                new[remove_gain.topk(n, largest=False).indices] = False
                new[add_gain.topk(n, largest=False).indices] = True
                new_masks[name] = new.view_as(current)
                per_layer[name] = n
            self.load(new_masks, concept)
        after = self.concept_probs(concept, input_ids, attention_mask)[0]
        kept = lambda masks: sum(int(m.sum()) * self._unit_size(n) for n, m in masks.items())  # noqa: E731
        total = sum(m.numel() * self._unit_size(n) for n, m in saved.items())
        sparsity_before, sparsity_after = 1 - kept(saved) / total, 1 - kept(new_masks) / total
        edit = MaskEdit(
            concept=self.model.concepts.names[concept], target=int(target), before_probs=before.tolist(),
            after_probs=after.tolist(), swapped=sum(per_layer.values()), sparsity_before=sparsity_before,
            sparsity_after=sparsity_after, seconds=time.perf_counter() - t0,
            rectified=bool(before.argmax() != target and after.argmax() == target), per_layer=per_layer,
        )
        if restore:
            self.load(saved, concept)
        return edit


@torch.no_grad()
def _predict(model, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(ids, mask)
    return torch.stack([lg.argmax(-1) for lg in out.concept_logits], 1), out.label_logits.argmax(-1)


def evaluate_mask_interventions(model, examples: list[dict], holdout: list[dict], mask_portion: float = 0.05,
                                restore: bool = True) -> dict:
    """Mask-level intervention on every wrongly predicted concept of each example, one example at a time.

    Args:
        model: A ``ConceptBottleneckModel`` with per-concept subnetworks.
        examples: Batches of one example (``input_ids``, ``attention_mask``, ``concepts``, ``label``) to intervene on.
        holdout: Batches never intervened on; breakage is measured on them.
        restore: Per-example (masks restored after each example) or online adaptation (edits kept).

    Returns:
        Rectification rate (wrong concept -> right, on intervened concepts), breakage rate (right -> wrong
        concept predictions on ``holdout``), task accuracy on ``examples`` before / after, and latency.
    """
    model.eval()
    editor = MaskEditor(model, mask_portion)
    before_hold = [_predict(model, b["input_ids"], b["attention_mask"])[0] for b in holdout]
    wrong = rectified = 0
    seconds, label_before, label_after = [], [], []
    for b in examples:
        ids, mask, truth = b["input_ids"], b["attention_mask"], b["concepts"][0]
        with editor.sb.reuse_unmasked_blocks():  # one example: its unmasked lower blocks run once
            concepts, label = _predict(model, ids, mask)
            label_before.append(int(label[0] == b["label"][0]))
            for k in torch.nonzero(concepts[0] != truth).flatten().tolist():
                edit = editor.intervene(k, ids, mask, int(truth[k]), restore=False)
                wrong += 1
                rectified += int(edit.after_probs.index(max(edit.after_probs)) == int(truth[k]))
                seconds.append(edit.seconds)
            label_after.append(int(_predict(model, ids, mask)[1][0] == b["label"][0]))
        if restore:
            editor.reset()
    right_hold = broken = 0
    for b, before in zip(holdout, before_hold):
        after = _predict(model, b["input_ids"], b["attention_mask"])[0]
        ok = before[0] == b["concepts"][0]
        right_hold += int(ok.sum())
        broken += int((ok & (after[0] != b["concepts"][0])).sum())
    editor.reset()
    n = max(len(examples), 1)
    return {
        "mode": "restore" if restore else "online",
        "mask_portion": mask_portion,
        "examples": len(examples),
        "intervened_concepts": wrong,
        "rectification_rate": rectified / wrong if wrong else None,
        "breakage_rate": broken / right_hold if right_hold else None,
        "holdout_examples": len(holdout),
        "task_acc_before": sum(label_before) / n,
        "task_acc_after": sum(label_after) / n,
        "ms_per_intervened_concept": 1000 * sum(seconds) / len(seconds) if seconds else None,
    }
