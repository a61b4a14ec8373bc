"""Timing primitives of the benchmark: peak-RSS sampling, training / inference / intervention timers and the
machine description (``sparsecbm.bench`` runs them per configuration)."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from typing import Any

import torch


class PeakRSS:
    """Samples this process's resident set size in a thread; ``peak`` is the max seen (bytes)."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self):
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.every_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _stats(times: list[float], batch: int) -> dict[str, float]:
    rates = sorted(batch / t for t in times)
    q = statistics.quantiles(rates, n=4) if len(rates) >= 2 else [rates[0]] * 3
    return {"examples_per_s": statistics.median(rates), "iqr": [q[0], q[2]], "steps": len(times), "batch": batch}


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pad(batch: dict[str, torch.Tensor], length: int | None, pad_id: int) -> dict[str, torch.Tensor]:
    if not length:
        return batch
    ids, mask = batch["input_ids"][:, :length], batch["attention_mask"][:, :length]
    extra = length - ids.shape[1]
    if extra > 0:
        ids = torch.cat([ids, torch.full((ids.shape[0], extra), pad_id, dtype=ids.dtype)], 1)
        mask = torch.cat([mask, torch.zeros((mask.shape[0], extra), dtype=mask.dtype)], 1)
    return {**batch, "input_ids": ids, "attention_mask": mask}


def time_training(module, batches, warmup: int, steps: int, pad_to: int | None, pad_id: int,
                  clip: float | None = None) -> dict[str, Any]:
    """Training examples/s of ``module`` (a :class:`~sparsecbm.lit.CBMLitModule`) on ``batches``: each timed
    step is what its training runs: the mode's own losses (``module.training_losses``: task and class-weighted
    concept losses, training interventions), backward, gradient clipping at ``clip`` and an AdamW step."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    module.train()
    times = []
    device = _device_of(module)
    with PeakRSS() as rss:
        for i in range(warmup + steps):
            b = _on(_pad(batches[i % len(batches)], pad_to, pad_id), device)
            _sync(device)
            t0 = time.perf_counter()
            loss = module.training_losses(b)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return {**_stats(times, batches[0]["label"].shape[0]), "peak_rss_bytes": rss.peak}


def time_score_updates(module, batches, reps: int) -> dict[str, Any]:
    """Seconds per mask update of the module's own scorer (its ``scorer.batches`` score batches through the
    module's concept losses, then the new masks), median and IQR over ``reps`` updates at the current level.
    Scorers that read no batches (magnitude, movement) are timed the same way (their update is the ranking)."""
    from sparsecbm.sparsity import Pruner

    sb = module.model.backbone
    pruner = Pruner(sb, module.concept_only_loss, module.concept_losses)
    score = batches[: max(pruner.scorer.batches, 1)]
    level = float(sb.mask_level)
    was = module.training
    module.eval()  # as the pruning callback scores: no dropout
    times = []
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            pruner.prune(level, lambda: score)
            _sync(_device_of(module))
            times.append(time.perf_counter() - t0)
    finally:
        module.train(was)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"seconds": statistics.median(times), "iqr": [q[0], q[2]], "reps": len(times),
            "scorer": pruner.scorer.name, "batches": len(score)}


@torch.no_grad()
def time_inference(model, examples: list[dict], batch_size: int, reps: int) -> float:
    """Seconds per example at ``batch_size`` (median over ``reps`` batches)."""
    return time_inference_pair({"model": model}, examples, batch_size, reps)["model"]["seconds"]


@torch.no_grad()
def time_inference_pair(models: dict[str, Any], examples: list[dict], batch_size: int, reps: int) -> dict[str, Any]:
    """Seconds per example at ``batch_size`` of every model in ``models``, measured side by side: rep ``r`` runs
    every model on the same batch in turn, so a change of machine load hits them alike. Median and IQR."""
    from sparsecbm.data.datamodule import Collator

    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
    for r in range(reps):
        items = [examples[(r * batch_size + j) % len(examples)] for j in range(batch_size)]
        for name, model in models.items():
            device = _device_of(model)
            b = _on(Collator(0)(items), device)
            _sync(device)
            t0 = time.perf_counter()
            model(b["input_ids"], b["attention_mask"])
            _sync(device)
            times[name].append((time.perf_counter() - t0) / batch_size)
    out = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        out[name] = {"seconds": statistics.median(t), "iqr": [q[0], q[2]], "reps": len(t)}
    return out


def time_interventions(model, examples: list[dict], n: int = 5, portion: float = 0.05) -> dict[str, Any]:
    """Seconds per intervened concept: concept level (edit one concept, recompute the label) and, for
    models with subnetworks, mask level (backprop to the mask, prune-and-grow, re-predict; restored)."""
    from contextlib import nullcontext

    from sparsecbm.data.datamodule import Collator
    from sparsecbm.models.bottleneck import edited_inputs, ground_truth_targets

    model.eval()
    concept_s, mask_s, cold_s = [], [], []
    editor = None
    if model.sparse and not model.backbone.shared:
        from sparsecbm.sparsity.mask_editing import MaskEditor

        editor = MaskEditor(model, portion)
    for i in range(n):
        b = _on(Collator(0)([examples[i % len(examples)]]), _device_of(model))
        if editor is not None:  # cold: an edit on an example with no prediction before it
            edit = editor.intervene(0, b["input_ids"], b["attention_mask"], int(b["concepts"][0, 0]), restore=True)
            cold_s.append(edit.seconds)
        # warm: predict, then edit (as the explorer and the evaluation do): the edit replays the unmasked
        # lower blocks the prediction ran
        with (editor.sb.reuse_unmasked_blocks() if editor is not None else nullcontext()), torch.no_grad():
            out = model.concept_outputs(b["input_ids"], b["attention_mask"])
            t0 = time.perf_counter()  # concept level: write concept 0's true value, re-run the label head
            edit = torch.zeros(1, len(out.logits), dtype=torch.bool, device=b["concepts"].device)
            edit[0, 0] = True
            targets = ground_truth_targets(b["concepts"], model.concepts.cardinalities)
            inputs = edited_inputs(out.logits, model.activation, targets, edit, embeddings=out.embeddings)
            model.label_from_inputs(inputs, out.residual).softmax(-1)
            _sync(_device_of(model))
            concept_s.append(time.perf_counter() - t0)
            if editor is not None:
                edit = editor.intervene(0, b["input_ids"], b["attention_mask"], int(b["concepts"][0, 0]),
                                        restore=True)
                mask_s.append(edit.seconds)
    out = {"concept_level_s": statistics.median(concept_s), "examples": n}
    if mask_s:  # medians and IQRs over the n examples (each its own length)
        out["mask_level_s"], out["mask_level_cold_s"] = statistics.median(mask_s), statistics.median(cold_s)
        for key, t in (("mask_level_iqr_s", mask_s), ("mask_level_cold_iqr_s", cold_s)):
            q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
            out[key] = [q[0], q[2]]
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "python": platform.python_version(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}  # `uptime`'s 1/5/15-min load: timing needs a quiet machine
