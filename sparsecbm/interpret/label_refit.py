"""Cost of a sparse concept->label layer on a fixed concept extractor, without retraining the backbone.

``python -m sparsecbm.interpret.label_refit CKPT [--data-root DIR] [--topk 1 2] [--l1 0.01]``

Computes the checkpoint's concept activations once (train and test), then refits its linear label
head from its trained weights on the frozen train activations: dense, top-k concepts per label
(:class:`~sparsecbm.models.label_sparsity.TopKConceptLinear`) and L1. Reports test task accuracy /
macro-F1 and, per variant, how many concepts each label reads. Concept metrics do not change (same
extractor). This is the sequential-style estimate; ``cbm.label_sparsity=...`` trains jointly instead.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from sparsecbm.checkpoint import load_checkpoint
from sparsecbm.models.cbm import concept_activations
from sparsecbm.models.label_sparsity import TopKConceptLinear, concept_blocks


@torch.no_grad()
def activations(module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """The label head's full input (concept activations, then the residual channel if any) and the labels."""
    acts, labels = [], []
    for batch in loader:
        out = module.model.concept_outputs(batch["input_ids"], batch["attention_mask"])
        x = concept_activations(out.logits, module.model.activation, out.embeddings)
        acts.append(x if out.residual is None else torch.cat([x, out.residual], dim=-1))
        labels.append(batch["label"])
    return torch.cat(acts), torch.cat(labels)


def refit(
    head: torch.nn.Linear, x, y, l1: float = 0.0, steps: int = 300, lr: float = 1e-2
) -> torch.nn.Linear:
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(head(x), y) + l1 * head.weight.abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def concepts_per_label(head, cardinalities, eps: float = 1e-2) -> list[int]:
    w = head.weight * head.mask() if isinstance(head, TopKConceptLinear) else head.weight
    norms = torch.stack([w[:, s].norm(dim=1) for s in concept_blocks(cardinalities)], 1)
    return (norms > eps).sum(1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--topk", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--l1", type=float, nargs="*", default=[0.01])
    parser.add_argument("--out", default=None)
    parser.add_argument("--cache-dir", default=".cache/tokenized")
    args = parser.parse_args()
    from sparsecbm.evaluate import datamodule_for

    torch.manual_seed(0)
    module = load_checkpoint(args.ckpt)
    dm = datamodule_for(module, None, args.data_root, args.cache_dir)
    (xtr, ytr), (xte, yte) = activations(module, dm.loader("train")), activations(module, dm.loader("test"))
    base, cards = module.model.label_head, module.model.block_widths  # columns per concept
    if module.model.residual_dim and args.topk:
        raise SystemExit("--topk selects concepts per label; this model has a residual channel (pass --topk with no value)")

    def evaluate(head) -> dict:
        with torch.no_grad():
            pred = head(xte).argmax(-1)
        return {
            "test_acc": float((pred == yte).float().mean()),
            "test_f1": float(f1_score(yte, pred, average="macro")),
            "concepts_per_label": concepts_per_label(head, cards),
        }

    def clone(k: int | None):
        head = (
            torch.nn.Linear(base.in_features, base.out_features)
            if k is None
            else TopKConceptLinear(cards, base.out_features, k)
        )
        with torch.no_grad():
            head.weight.copy_(base.weight)
            head.bias.copy_(base.bias)
        return head

    results = {"checkpoint (no refit)": evaluate(base), "dense refit": evaluate(refit(clone(None), xtr, ytr))}
    for k in args.topk:
        results[f"topk k={k} refit"] = evaluate(refit(clone(k), xtr, ytr))
    for lam in args.l1:
        results[f"l1 {lam} refit"] = evaluate(refit(clone(None), xtr, ytr, l1=lam))
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
