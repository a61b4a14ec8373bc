"""Cost of a sparse concept->label layer on a fixed concept extractor, without retraining the backbone.

``python -m sparsecbm.label_refit ckpt_path=CKPT [data.root=DIR] [topk=[1,2]] [l1=[0.01]]``

Computes the checkpoint's concept activations once (train and test), then refits its linear label
head from its trained weights on the frozen train activations: dense, top-k concepts per label
(:class:`~sparsecbm.models.label_sparsity.TopKConceptLinear`) and L1. Reports test task accuracy /
macro-F1 and, per variant, how many concepts each label reads. Concept metrics do not change (same
extractor). This is the sequential-style estimate; ``cbm.label_sparsity=...`` trains jointly instead.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from sparsecbm.config import hydra_entry_point
from sparsecbm.errors import ConfigError


def run(cfg: DictConfig) -> dict[str, dict]:
    """Refit the checkpoint's label head (dense, top-k, L1) on frozen train activations; score on ``split``."""
    import torch

    from sparsecbm.config import check_split
    from sparsecbm.interpret.label_refit import activations, concepts_per_label, refit
    from sparsecbm.metrics import classification_scores
    from sparsecbm.models.label_sparsity import TopKConceptLinear
    from sparsecbm.session import session_from_cfg

    split = check_split(cfg.split)
    topk, l1s = [int(k) for k in cfg.topk or []], [float(x) for x in cfg.l1 or []]
    session = session_from_cfg(cfg)
    session.require_concepts("refit a label layer on concepts")
    model = session.model
    if model.residual_dim and topk:
        raise ConfigError("topk selects concepts per label, but this model has a residual channel; pass topk=[]")
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    device = next(model.parameters()).device
    (xtr, ytr), (xte, yte) = [[t.to(device) for t in activations(model, session.collect(dm.loader(s)))]
                              for s in ("train", split)]
    base, cards = model.label_head, model.block_widths  # columns per concept
    n_labels = model.concepts.label.num_classes

    def evaluate(head) -> dict:
        with torch.no_grad():
            pred = head(xte).argmax(-1)
        scores = classification_scores(pred.cpu(), yte.cpu(), n_labels)
        return {f"{split}_acc": scores["acc"], f"{split}_f1": scores["f1"],
                f"{split}_f1_papers": scores["f1_papers"], "concepts_per_label": concepts_per_label(head, cards)}

    def clone(k: int | None):
        head = (
            torch.nn.Linear(base.in_features, base.out_features)
            if k is None
            else TopKConceptLinear(cards, base.out_features, k)
        ).to(device)
        with torch.no_grad():
            head.weight.copy_(base.weight)
            head.bias.copy_(base.bias)
        return head

    steps, lr = int(cfg.steps), float(cfg.lr)
    results = {"checkpoint (no refit)": evaluate(base),
               "dense refit": evaluate(refit(clone(None), xtr, ytr, steps=steps, lr=lr))}
    for k in topk:
        results[f"topk k={k} refit"] = evaluate(refit(clone(k), xtr, ytr, steps=steps, lr=lr))
    for lam in l1s:
        results[f"l1 {lam} refit"] = evaluate(refit(clone(None), xtr, ytr, l1=lam, steps=steps, lr=lr))
    from rich.console import Console
    from rich.table import Table

    from sparsecbm.jsonio import write_json
    from sparsecbm.results import print_outputs

    path = write_json(Path(cfg.paths.output_dir) / "label_refit.json", results)
    if cfg.get("out"):
        write_json(Path(cfg.out), results)
    table = Table(title=f"label layer refits on frozen concepts ({split})")
    for col in ("variant", "acc", "macro-F1", "F1 (papers)", "concepts per label"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, r in results.items():
        table.add_row(name, f"{100 * r[f'{split}_acc']:.1f}", f"{100 * r[f'{split}_f1']:.1f}",
                      f"{100 * r[f'{split}_f1_papers']:.1f}", " ".join(map(str, r["concepts_per_label"])))
    Console().print(table)
    print_outputs({"label refits": path, "copy": cfg.get("out")})
    return results


@hydra_entry_point("label_refit")
def main(cfg: DictConfig) -> None:
    """``python -m sparsecbm.label_refit ckpt_path=... [data.root=DIR] [topk=[1,2]] [l1=[0.01]]``."""
    run(cfg)


if __name__ == "__main__":
    main()
