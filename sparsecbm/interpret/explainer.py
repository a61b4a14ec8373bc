"""Build :class:`~sparsecbm.interpret.explanation.Explanation` objects (and the :class:`ExplanationSet` the
explain command and the explorer write) from a model and a batch."""

from __future__ import annotations

import torch

from sparsecbm.interpret.attribution import Tokens, get_method, resolve_name
from sparsecbm.interpret.explanation import ConceptExplanation, Explanation, ExplanationSet, LabelConcept
from sparsecbm.models.cbm import ConceptOutputs, as_outputs, concept_activations
from sparsecbm.models.label_sparsity import label_weight

#: The key of the residual channel's contribution (hybrid bottleneck) beside the concepts'.
RESIDUAL = "(residual)"


def label_layer_summary(model, eps: float = 0.0) -> dict[str, list[LabelConcept]] | None:
    """Per label, the concepts it reads (weight-block norm > ``eps``), largest first; ``None`` for an MLP head.

    The weights are keyed by concept value, or by embedding dimension (``d0``, ``d1``, ...) for
    ``activation=embedding``; a hybrid bottleneck's residual channel is listed as ``(residual)``.
    """
    w = label_weight(model.label_head) if model.has_concepts else None
    if w is None:
        return None
    cs = model.concepts
    names = [spec.values if model.activation != "embedding" else [f"d{i}" for i in range(width)]
             for spec, width in zip(cs.concepts, model.block_widths)]
    blocks = list(zip(cs.names, names, model.concept_blocks()))
    if model.residual_block is not None:
        blocks.append((RESIDUAL, [f"r{i}" for i in range(model.residual_dim)], model.residual_block))
    out = {}
    for row, label in enumerate(cs.label.values):
        used = []
        for name, keys, block in blocks:
            ws = w[row, block].detach()
            if float(ws.norm()) > eps:
                used.append(LabelConcept(name, dict(zip(keys, map(float, ws))), float(ws.norm())))
        out[str(label)] = sorted(used, key=lambda c: -c.norm)
    return out


def concept_contributions(
    model, concepts: list[torch.Tensor] | ConceptOutputs, label: torch.Tensor
) -> torch.Tensor | None:
    """``[B, K]`` (``[B, K + 1]`` with a residual channel, last): each concept's contribution to the logit
    of ``label`` (weight x activation summed over the concept's block: its values, or its embedding).

    With the bias, the contributions sum exactly to that logit. ``None`` for an MLP label head.

    Args:
        model: The :class:`~sparsecbm.models.cbm.ConceptBottleneckModel`.
        concepts: Concept outputs (or, for logits/probs/hard without residual, the concept logits alone).
        label: ``[B]`` the label whose logit is explained.
    """
    w = label_weight(model.label_head)
    if w is None:
        return None
    out = as_outputs(concepts)
    acts = concept_activations(out.logits, model.activation, out.embeddings)  # [B, D]
    if out.residual is not None:
        acts = torch.cat([acts, out.residual.to(acts.dtype)], dim=-1)
    per_col = acts * w[label]  # [B, D (+ r)]
    blocks = model.concept_blocks() + ([model.residual_block] if model.residual_block is not None else [])
    return torch.stack([per_col[:, s].sum(-1) for s in blocks], dim=-1)


@torch.no_grad()
def _forward(model, batch):
    outputs = model.concept_outputs(batch["input_ids"], batch["attention_mask"])
    extras = outputs.pooler
    label_logits, _ = model.label_from_outputs(outputs)
    return outputs, extras, label_logits


def explain_batch(
    session, batch: dict, method: str = "ours", texts: list[str] | None = None, units: bool = False, **options
) -> list[Explanation]:
    """Explanations of every example of ``batch`` (``input_ids``, ``attention_mask``, optional ``label``/``concepts``).

    Args:
        session: An :class:`~sparsecbm.session.InferenceSession` (its model with concepts, its tokenizer).
        batch: A collated batch on the session's device.
        method: Token attribution method (see :mod:`sparsecbm.interpret.attribution`).
        texts: The raw texts (decoded from the ids when ``None``).
        units: Sparse models: per example and concept, also the heads and FFN neurons of its subnetwork that
            mattered most (one more forward and backward per concept and example; off unless asked).
        **options: Method options (``n_steps``, ``n_samples``, ...).
    """
    model, tokenizer = session.model.eval(), session.tokenizer
    if not model.has_concepts:
        raise ValueError("explanations need a concept-bottleneck model (cbm.mode=standard has no concepts)")
    tokens = Tokens.from_tokenizer(tokenizer)
    attributor = get_method(method, tokens, model, **options)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    outputs, extras, label_logits = _forward(model, batch)
    logits = outputs.logits
    # every concept at once: a method that can shares the forward passes (LIG), and none recomputes the targets
    scores = attributor.attribute_all(model, batch, [lg.argmax(-1) for lg in logits])
    weights = model.token_pooler.token_weights(extras) if extras is not None else None
    pred = label_logits.argmax(-1)
    contrib = concept_contributions(model, outputs, pred)
    contrib_names = [*model.concepts.names, *([RESIDUAL] if model.residual_dim else [])]
    bias = model.label_head.bias.detach()[pred] if contrib is not None else None
    cs = model.concepts
    toks = session.tokens(batch)
    from sparsecbm.sparsity.unit_attribution import example_subnetworks, subnetwork_summary

    summary = subnetwork_summary(model)
    if texts is None:
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    out = []
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        concepts = []
        for k, spec in enumerate(cs.concepts):
            p = logits[k][b].softmax(-1)
            gates = weights[k, b, real].tolist() if weights is not None else None
            true = spec.values[int(batch["concepts"][b, k])] if "concepts" in batch else None
            concepts.append(
                ConceptExplanation(
                    spec.name,
                    list(spec.values),
                    p.tolist(),
                    spec.values[int(p.argmax())],
                    scores[k][b, real].tolist(),
                    gates,
                    true,
                    list(spec.levels) or None,
                )
            )
        lp = label_logits[b].softmax(-1)
        out.append(
            Explanation(
                text=texts[b],
                tokens=toks[b],
                concepts=concepts,
                label_values=[str(v) for v in cs.label.values],
                label_probs=lp.tolist(),
                predicted_label=str(cs.label.values[int(pred[b])]),
                contributions=dict(zip(contrib_names, contrib[b].tolist())) if contrib is not None else None,
                label_bias=float(bias[b]) if bias is not None else None,
                true_label=str(cs.label.values[int(batch["label"][b])]) if "label" in batch else None,
                subnetwork=example_subnetworks(model, ids[b : b + 1], mask[b : b + 1], summary, units=units),
            )
        )
    return out


def explanation_set(session, explanations: list[Explanation], method: str, results_path=None,
                    meta: dict | None = None) -> ExplanationSet:
    """The :class:`ExplanationSet` of ``explanations`` with the model-level summaries (label layer, label
    sparsity, subnetworks with the training run's cross-mask matrix when ``results_path`` is its
    ``results.json``): what ``explain`` writes and the explorer exports."""
    from sparsecbm.sparsity.unit_attribution import subnetwork_summary

    model = session.model
    return ExplanationSet(
        explanations, method=resolve_name(method, model),
        checkpoint=str(session.ckpt_path) if session.ckpt_path else None,
        label_layer=label_layer_summary(model), label_sparsity=session.meta.cbm.get("label_sparsity", "none"),
        subnetwork=subnetwork_summary(model, results_path), meta={"activation": model.activation, **(meta or {})})

