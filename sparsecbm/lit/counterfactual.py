"""Counterfactual training terms: consistency of interventions with counterfactual outputs, and imitation of a
teacher (a concept *proxy* of a black box, as in Causal Proxy Models, Wu et al. ICLR 2023).

**Counterfactual consistency** (``cbm.counterfactual_weight``, 0 = off): the model's intervention on a
training text ``x``, ``p(y | x, do(C = b))``, should match what the model says on a text ``x~`` whose
concept ``C`` *is* ``b``: ``KL(q(x~) || p(y | x, do(C = b)))``, an interchange-style loss. The target ``q`` is
the model's own output on ``x~`` (no gradient) or, with a teacher, the teacher's. CEBaB's training split
holds one text per review, so ``x~`` is an *approximate* counterfactual from the **training split only**: a
training text whose true values equal ``x``'s with ``C`` set to ``b`` (``C`` and ``b != x's value`` drawn
uniformly per example; examples without such a text are left out of the term). No dev or test text is read.

**Imitation** (``cbm.teacher=<checkpoint>``): the task loss becomes ``(1 - w) CE(y) + w KL(t(x) || p(x))``
with ``w = cbm.teacher_weight`` and ``t`` the teacher's label distribution (computed once for the training
split at fit start), so a concept model learns to imitate a black box's outputs.

The draws use their own generator (seeded by the run's seed and the step): switching the term on or off
leaves every other random draw of the run unchanged.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from sparsecbm.models.bottleneck import edited_inputs, ground_truth_targets
from sparsecbm.models.cbm import ConceptOutputs


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B]`` ``KL(target || softmax(logits))`` (the target's entropy subtracted, so a perfect match is 0)."""
    logp = logits.float().log_softmax(-1)
    target = target.float()
    return (target * (target.clamp(min=1e-12).log() - logp)).sum(-1)


class TrainingCounterfactuals:
    """Approximate counterfactual partners within the training split (see the module docstring).

    Args:
        concepts: ``[N, K]`` true value indices of the training split.
        cardinalities: Values per concept.
    """

    def __init__(self, concepts, cardinalities: list[int]):
        self.concepts = torch.as_tensor(concepts, dtype=torch.long).reshape(-1, len(cardinalities))
        self.cardinalities = list(cardinalities)
        self.by_values: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, row in enumerate(self.concepts.tolist()):
            self.by_values[tuple(row)].append(i)

    def sample(self, values: torch.Tensor, generator: torch.Generator):
        """For ``[B, K]`` true values: (rows that got a partner ``[R]``, their concept ``[R]``, the target value
        ``[R]``, the partner's training index ``[R]``)."""
        values = values.detach().cpu()
        b, k = values.shape
        concept = torch.randint(k, (b,), generator=generator)
        shift = torch.rand(b, generator=generator)
        pick = torch.rand(b, generator=generator)
        rows, cs, targets, partners = [], [], [], []
        for i in range(b):
            c = int(concept[i])
            others = [v for v in range(self.cardinalities[c]) if v != int(values[i, c])]
            target = others[min(int(shift[i] * len(others)), len(others) - 1)]
            key = list(values[i].tolist())
            key[c] = target
            pool = self.by_values.get(tuple(key))
            if pool:
                rows.append(i)
                cs.append(c)
                targets.append(target)
                partners.append(pool[min(int(pick[i] * len(pool)), len(pool) - 1)])
        as_t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
        return as_t(rows), as_t(cs), as_t(targets), as_t(partners)


def intervened_logits(model, outputs: ConceptOutputs, rows: torch.Tensor, concept: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
    """Label logits of ``rows`` with concept ``concept[r]`` set to value ``target[r]`` (hard), the others as read."""
    rows = rows.to(outputs.logits[0].device)
    logits = [lg[rows] for lg in outputs.logits]
    embeddings = None if outputs.embeddings is None else [e[rows] for e in outputs.embeddings]
    values = torch.zeros(len(rows), len(logits), dtype=torch.long, device=rows.device)
    values[torch.arange(len(rows), device=rows.device), concept.to(rows.device)] = target.to(rows.device)
    mask = F.one_hot(concept.to(rows.device), len(logits)).bool()
    inputs = edited_inputs(logits, model.activation, ground_truth_targets(values, model.concepts.cardinalities),
                           mask, embeddings=embeddings)
    residual = None if outputs.residual is None else outputs.residual[rows]
    return model.label_from_inputs(inputs, residual)


class CounterfactualTerms:
    """What a :class:`~sparsecbm.lit.CBMLitModule` needs for both terms, built at fit start from its data module."""

    def __init__(self, module, datamodule):
        cfg = module.cbm
        self.weight, self.teacher_weight = float(cfg.counterfactual_weight), float(cfg.teacher_weight)
        self.seed = int((module.run_config or {}).get("seed", 0))
        self.dm = datamodule
        train = datamodule.raw["train"]
        self.partners = TrainingCounterfactuals(train.concepts, module.concept_set.cardinalities) if self.weight else None
        self.teacher = teacher_probs(cfg.teacher, module, datamodule) if cfg.teacher else None

    def teacher_loss(self, label_logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                     task: torch.Tensor) -> torch.Tensor:
        """``(1 - w) task + w KL(teacher || model)`` for the batch's training indices."""
        if self.teacher is None:
            return task
        t = self.teacher.to(label_logits.device)[index.to(label_logits.device)]
        return (1 - self.teacher_weight) * task + self.teacher_weight * soft_cross_entropy(label_logits, t).mean()

    def consistency(self, module, batch: dict[str, torch.Tensor], outputs: ConceptOutputs) -> dict[str, torch.Tensor]:
        """``{"counterfactual": weight x mean KL}`` over the batch's examples with a partner (``{}`` when off)."""
        if not self.weight or "concepts" not in batch:
            return {}
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(module.global_step))
        rows, concept, target, partners = self.partners.sample(batch["concepts"], g)
        if len(rows) == 0:
            return {"counterfactual": outputs.logits[0].sum() * 0.0}
        device = outputs.logits[0].device
        if self.teacher is not None:
            q = self.teacher[partners].to(device)
        else:
            split = self.dm.splits["train"]
            other = self.dm.collator()([split[int(j)] for j in partners])
            # its own RNG: the partner's dropout leaves the run's other draws as they are without the term
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                q = module.model(other["input_ids"].to(device), other["attention_mask"].to(device)).label_logits
                q = q.float().softmax(-1)
        logits = intervened_logits(module.model, outputs, rows, concept, target)
        return {"counterfactual": self.weight * soft_cross_entropy(logits, q).mean()}


@torch.no_grad()
def teacher_probs(path: str, module, datamodule) -> torch.Tensor:
    """``[N, L]`` the teacher checkpoint's label distribution on every training text (by training index)."""
    from sparsecbm.checkpoint import load_model
    from sparsecbm.errors import CheckpointError

    with torch.random.fork_rng(devices=[]):  # building the teacher draws initial weights: not from the run's RNG
        teacher, meta = load_model(path, module.device)
    labels, ours = list(meta.concepts.label.values), list(module.concept_set.label.values)
    if labels != ours:
        raise CheckpointError(f"cbm.teacher={path} predicts labels {labels}, this model {ours}; imitate a model of "
                              "the same task")
    if meta.tokenizer_name != datamodule.tokenizer_name:
        raise CheckpointError(f"cbm.teacher={path} reads text with tokenizer '{meta.tokenizer_name}', this run with "
                              f"'{datamodule.tokenizer_name}'; use a teacher with the same backbone")
    teacher.eval()
    device = next(teacher.parameters()).device
    out = torch.zeros(len(datamodule.raw["train"]), len(labels))
    for batch in datamodule.loader("train"):
        logits = teacher(batch["input_ids"].to(device), batch["attention_mask"].to(device)).label_logits
        out[batch["index"]] = logits.float().softmax(-1).cpu()
    del teacher
    return out
