"""Cost of a sparse concept->label layer on a fixed concept extractor, without retraining the backbone.

``python -m sparsecbm.interpret.label_refit ckpt_path=CKPT [data.root=DIR] [topk=[1,2]] [l1=[0.01]]``

Computes the checkpoint's concept activations once (train and test), then refits its linear label
head from its trained weights on the frozen train activations: dense, top-k concepts per label
(:class:`~sparsecbm.models.label_sparsity.TopKConceptLinear`) and L1. Reports test task accuracy /
macro-F1 and, per variant, how many concepts each label reads. Concept metrics do not change (same
extractor). This is the sequential-style estimate; ``cbm.label_sparsity=...`` trains jointly instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from sparsecbm.config import hydra_entry_point
from sparsecbm.errors import ConfigError
from sparsecbm.models.cbm import concept_activations
from sparsecbm.models.label_sparsity import TopKConceptLinear, concept_blocks
from sparsecbm.results import write_json


@torch.no_grad()
def activations(module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """The label head's full input (concept activations, then the residual channel if any) and the labels."""
    acts, labels = [], []
    device = next(module.parameters()).device
    for batch in loader:
        out = module.model.concept_outputs(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        x = concept_activations(out.logits, module.model.activation, out.embeddings)
        acts.append(x if out.residual is None else torch.cat([x, out.residual], dim=-1))
        labels.append(batch["label"].to(device))
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


def run(cfg: DictConfig) -> dict[str, dict]:
    """Refit the checkpoint's label head (dense, top-k, L1) on frozen train activations; score on ``split``."""
    from sparsecbm.config import check_split
    from sparsecbm.evaluate import session_from_cfg
    from sparsecbm.metrics import classification_scores

    split = check_split(cfg.split)
    topk, l1s = [int(k) for k in cfg.topk or []], [float(x) for x in cfg.l1 or []]
    session = session_from_cfg(cfg)
    session.require_concepts("refit a label layer on concepts")
    module = session.module
    if module.model.residual_dim and topk:
        raise ConfigError("topk selects concepts per label, but this model has a residual channel; pass topk=[]")
    dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    (xtr, ytr), (xte, yte) = activations(module, dm.loader("train")), activations(module, dm.loader(split))
    base, cards = module.model.label_head, module.model.block_widths  # columns per concept
    n_labels = module.concept_set.label.num_classes

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
        ).to(xtr.device)
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
    text = json.dumps(results, indent=1)
    print(text)
    write_json(Path(cfg.paths.output_dir) / "label_refit.json", results)
    if cfg.get("out"):
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text + "\n")
    return results


def legacy_argv(argv: list[str]) -> list[str]:
    """The earlier ``CKPT [--data-root DIR] [--topk 1 2] [--l1 0.01] [--out F] [--cache-dir D]`` spelling ->
    Hydra overrides (accepted one release, with a ``FutureWarning``)."""
    legacy = ("--data-root", "--topk", "--l1", "--out", "--cache-dir")
    if not argv or not (("=" not in argv[0] and not argv[0].startswith("-")) or any(a in legacy for a in argv)):
        return argv
    import warnings

    warnings.warn("label_refit CKPT --data-root DIR ... is deprecated; use ckpt_path=CKPT data.root=DIR topk=[1,2] "
                  "l1=[0.01]", FutureWarning, stacklevel=2)
    out, option, values = [], None, {}
    for a in argv:
        if a.startswith("--"):
            option = a[2:]
            values.setdefault(option, [])
        elif option is None:
            out.append(f"ckpt_path={a}")
        else:
            values[option].append(a)
    names = {"data-root": "data.root", "out": "out", "cache-dir": "paths.cache_dir"}
    for option, vals in values.items():
        if option in ("topk", "l1"):
            out.append(f"{option}=[{','.join(vals)}]")
        elif option in names and vals:
            out.append(f"{names[option]}={vals[0]}")
        else:
            raise ConfigError(f"label_refit: unknown option --{option}; use ckpt_path=... data.root=DIR topk=[...] l1=[...]")
    return out


@hydra_entry_point("label_refit")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """``python -m sparsecbm.interpret.label_refit ckpt_path=... [data.root=DIR] [topk=[1,2]] [l1=[0.01]]``."""
    import sys

    try:
        sys.argv[1:] = legacy_argv(sys.argv[1:])
    except ConfigError as e:
        from sparsecbm.errors import USER_ERROR_EXIT, report

        report(str(e))
        raise SystemExit(USER_ERROR_EXIT) from None
    _hydra_main()


if __name__ == "__main__":
    main()
