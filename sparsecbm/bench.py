"""Speed, memory and scaling benchmark: ``python -m sparsecbm.bench [overrides]``.

What it times is the default model as training runs it: every configuration names a ``cbm`` config
(``conf/cbm/*.yaml``; ``cem`` = concept embeddings with per-concept attention pooling, the default) and, for
subnetworks, sparsity settings (``sparse_default`` = ``conf/sparsity/structured.yaml``). A timed training step
is the module's own ``training_losses`` (task loss, class-weighted concept loss, training interventions),
backward, gradient clipping and an AdamW step, at the final sparsity. A scorer that reads batches (Taylor)
also updates the masks during training: one update is timed separately and amortised over a default run
(``updates`` updates of the schedule over ``total_steps`` steps of ``trainer_default.max_epochs`` epochs of
the training split), and ``ratio_to_dense`` uses the amortised rate (``ratio_to_dense_no_updates`` without).

Every configuration runs on the same CEBaB batches, each in a fresh process (``isolate=true``, so its
peak RSS is its own; ``isolate=false`` runs them all in this process). Reported per config:
training examples/s (median and inter-quartile range over timed steps after warm-up), the ratio to
the dense floor measured in the same run, peak RSS while it ran (sampled), inference latency per
example at batch 1 and 32, mask memory, intervention latencies; then one side-by-side inference comparison
(``inference_pair``: the models alternate on the same batches in one process), and scaling with K and with
sequence length (median and IQR). ``machine.load_avg`` is the load when the run started and ``load_avg_end``
when it ended. Writes ``bench.json`` and ``bench.md`` (and ``docs_path`` if set).
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sparsecbm.config import hydra_entry_point, quiet_libraries, register_resolvers
from sparsecbm.errors import ConfigError
from sparsecbm.results import write_json
from sparsecbm.timing import (
    machine,
    time_inference_pair,
    time_interventions,
    time_score_updates,
    time_training,
)

log = logging.getLogger(__name__)


def build_module(spec: dict[str, Any], concepts, backbone_cfg, cbms: dict[str, Any], seed: int = 0,
                 device: str = "cpu"):
    """A :class:`~sparsecbm.lit.CBMLitModule` for timing: the ``cbm`` config ``spec["cbm"]`` names (a key of
    ``cbms``), dense or with per-concept subnetworks at the sparsity's final level, on ``device``."""
    from hydra.utils import instantiate

    from sparsecbm.lit import CBMLitModule

    torch.manual_seed(seed)
    backbone = instantiate(backbone_cfg)
    sparsity = spec.get("sparsity")
    if sparsity:
        from sparsecbm.sparsity import MagnitudeScorer, Pruner, SubnetworkBackbone

        settings = {k: v for k, v in sparsity.items() if k != "level" and not k.startswith("_")}
        backbone = SubnetworkBackbone(backbone, len(concepts), **settings)
        # masks at the level: with scope=layer every concept keeps the same number of units per layer, so the
        # cost is that of any masks at this level (magnitude needs no batches); score updates are timed apart
        Pruner(backbone, scorer=MagnitudeScorer()).prune(level_of(sparsity))
    name = spec.get("cbm", "joint")
    if name not in cbms:
        raise ConfigError(f"bench: configuration cbm={name!r} is not one of the composed cbm configs {sorted(cbms)}")
    return CBMLitModule(backbone, concepts, cbm=cbms[name]).to(device)


def level_of(sparsity: dict[str, Any]) -> float:
    """The sparsity a configuration is timed at: ``level``, else its schedule's final sparsity."""
    return float(sparsity.get("level", (sparsity.get("schedule") or {}).get("final_sparsity", 0.7)))


def amortised_updates(sparsity: dict[str, Any], n_train: int, batch_size: int, epochs: int) -> dict[str, int]:
    """How many mask updates a default training run makes (the schedule's window and ``every`` over
    ``epochs`` epochs of ``n_train`` examples in batches of ``batch_size``), and its steps."""
    from sparsecbm.sparsity import Schedule

    per_epoch = -(-n_train // batch_size)
    total = per_epoch * epochs
    schedule = Schedule.from_settings(sparsity.get("schedule"))
    window, level, updates = schedule.window(total, per_epoch), 0.0, 0
    for step in range(total):  # as the pruning callback: a target equal to the current level is no update
        target = schedule.target(step, window)
        if target is not None and abs(target - level) > 1e-9:
            updates, level = updates + 1, target
    return {"updates": updates, "total_steps": total, "epochs": epochs, "steps_per_epoch": per_epoch}


def targets(result: dict[str, Any], spec) -> list[dict[str, Any]]:
    """Each target of ``cfg.targets`` (config, metric, bound) with the measured value and whether it is met."""
    out = []
    configs = result["configs"]
    dense = next(iter(configs.values()))
    for t in OmegaConf.to_container(spec, resolve=True) if spec else []:
        r = configs.get(t["config"])
        if r is None:  # a target whose configuration did not run fails the bench; it never just disappears
            raise ConfigError(f"bench targets: configuration {t['config']!r} (metric {t['metric']}) did not run; "
                             f"configs that ran: {list(configs)}")
        metric = t["metric"]
        if metric == "train_ratio":
            value = r["ratio_to_dense"]
        elif metric.startswith("k_train_ratio@"):  # training ex/s sparse / dense at K concepts (k_scaling)
            pair = (result.get("k_scaling") or {}).get(f"K={metric.split('@')[1]}")
            if pair is None:
                raise ConfigError(f"bench targets: {metric} needs K={metric.split('@')[1]} in k_scaling")
            value = pair["sparse"] / pair["dense"]
        elif metric == "peak_rss_gb":
            value = r["train"]["peak_rss_bytes"] / 2**30
        elif metric.startswith("inference_ratio@"):  # side by side (inference_pair) when it ran this config
            bs = metric.split("@")[1]
            pair = (result.get("inference_pair") or {}).get(f"batch_{bs}", {})
            if t["config"] in pair.get("ratio", {}):
                value = pair["ratio"][t["config"]]
            else:
                key = f"batch_{bs}_s"
                value = r.get("inference", {}).get(key, float("nan")) / dense.get("inference", {}).get(key, float("nan"))
        elif metric in ("mask_intervention_ms", "mask_intervention_cold_ms"):
            # after the example's prediction in the same replay block (intervene level=mask), or cold: the
            # explorer's "Fix subnetwork", whose edit runs the unmasked lower blocks itself (see time_interventions)
            key = "mask_level_s" if metric == "mask_intervention_ms" else "mask_level_cold_s"
            value = 1000 * r.get("intervention", {}).get(key, float("nan"))
        else:
            raise ConfigError(f"bench targets: unknown metric {metric!r} (expected train_ratio, peak_rss_gb, "
                              "inference_ratio@<batch>, mask_intervention_ms, mask_intervention_cold_ms, "
                              "k_train_ratio@<K>)")
        met = value >= t["min"] if "min" in t else value <= t["max"]
        out.append({**t, "value": value, "met": bool(met)})
    return out


def bench_config(spec: dict[str, Any], concepts, backbone_cfg, cbms, batches, examples, pad_id: int, warmup: int,
                 timed: int, inference_batches: list[int], inference_reps: int, score_reps: int, amortise: dict,
                 clip: float | None = None, interventions: int = 5, threads=None, seed: int = 0,
                 device: str = "cpu") -> dict[str, Any]:
    """One configuration: training throughput (and, for a scorer that reads batches, its mask updates amortised
    over a default run) and peak RSS, inference latency, intervention latency, mask bytes."""
    if threads:
        torch.set_num_threads(int(threads))
    quiet_libraries()
    module = build_module(spec, concepts, backbone_cfg, cbms, seed, device)
    model = module.model
    steps = spec.get("steps", timed)
    train_stats = time_training(module, batches, warmup if steps > 2 else 1, steps, spec.get("pad_to"), pad_id, clip)
    entry = {"spec": spec, "cbm": module.cbm.to_dict(), "train": train_stats, "pid": os.getpid(),
             "mask_bytes": model.backbone.mask_bytes() if hasattr(model.backbone, "mask_bytes") else 0}
    sparsity = spec.get("sparsity") or {}
    if sparsity.get("scorer") and not spec.get("pad_to"):  # the configured scorer's mask updates, amortised
        update = time_score_updates(module, batches, score_reps)
        plan = amortised_updates(sparsity, amortise["n_train"], amortise["batch_size"], amortise["epochs"])
        step_s = train_stats["batch"] / train_stats["examples_per_s"]
        per_step = update["seconds"] * plan["updates"] / plan["total_steps"]
        entry["score_updates"] = {**update, **plan, "amortised_s_per_step": per_step}
        entry["train_amortised"] = {"examples_per_s": train_stats["batch"] / (step_s + per_step)}
    if spec.get("published_masks"):  # the published code keeps one float32 mask per weight per concept
        masked = sum(layer.weight.numel() for layer in model.backbone.masked_layers().values())
        entry["published_mask_bytes"] = 4 * masked * model.backbone.state.n_masks
    if spec.get("inference", True):
        entry["inference"] = {f"batch_{bs}_s": time_inference_pair({"m": model}, examples, bs, inference_reps)["m"]
                              ["seconds"] for bs in inference_batches}
    if spec.get("inference", True) and model.has_concepts:
        entry["intervention"] = time_interventions(model, examples, n=interventions)
    del module, model
    gc.collect()
    return entry


def inference_pair(names: list[str], specs: dict[str, dict], concepts, backbone_cfg, cbms, examples,
                   inference_batches: list[int], reps: int, threads=None, seed: int = 0,
                   device: str = "cpu") -> dict[str, Any]:
    """The ``names`` configurations' inference latency side by side in one process (alternating on the same
    batches), per batch size: seconds per example (median, IQR) and each one's ratio to the first."""
    if threads:
        torch.set_num_threads(int(threads))
    quiet_libraries()
    models = {n: build_module(specs[n], concepts, backbone_cfg, cbms, seed, device).model for n in names}
    time_inference_pair(models, examples, 1, 2)  # untimed: first-call costs of both
    out: dict[str, Any] = {"configs": names, "reps": reps}
    for bs in inference_batches:
        t = time_inference_pair(models, examples, bs, reps)
        out[f"batch_{bs}"] = {**t, "ratio": {n: t[n]["seconds"] / t[names[0]]["seconds"] for n in names}}
    return out


def _in_process(isolate: bool, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh spawned process (its peak RSS is its own) or in this one."""
    if not isolate:
        return fn(*args, **kwargs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def run(cfg: DictConfig) -> dict[str, Any]:
    from hydra.utils import instantiate

    from sparsecbm.bench_report import markdown
    from sparsecbm.config import resolve_device

    seed, device = int(cfg.seed), resolve_device(cfg.get("accelerator", "cpu"))
    torch.manual_seed(seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dm = instantiate(cfg.data)
    dm.setup()
    train = dm.splits["train"]
    n_batches = max(cfg.steps.warmup + cfg.steps.timed, 1)
    loader = dm.loader("train", shuffle=True, batch_size=cfg.batch_size)
    batches = []
    for b in loader:
        batches.append(b)
        if len(batches) >= n_batches:
            break
    pad_id = dm.tokenizer.pad_token_id
    examples = [train[i] for i in range(min(len(train), 256))]
    cbms = OmegaConf.to_container(cfg.cbms, resolve=True)
    specs = {n: OmegaConf.to_container(s, resolve=True) for n, s in cfg.configs.items()}
    trainer = cfg.trainer_default
    amortise = {"n_train": len(train), "batch_size": int(dm.batch_size), "epochs": int(trainer.max_epochs)}
    result: dict[str, Any] = {"machine": machine(), "batch_size": cfg.batch_size, "seed": seed, "device": device,
                              "configs": {}, "cbms": cbms, "amortise": amortise,
                              "data": dm.describe(), "settings": OmegaConf.to_container(cfg.steps)}
    isolate = bool(cfg.get("isolate", True))
    common = {"concepts": dm.concept_set, "backbone_cfg": OmegaConf.to_container(cfg.backbone, resolve=True),
              "cbms": cbms, "seed": seed, "device": device, "threads": cfg.threads}
    if cfg.get("warm_start", True) and not isolate:
        # one untimed pass of the first config: the first model in a process otherwise pays one-time costs
        # (allocator growth, kernel selection) that would bias every ratio in favour of the later configs
        first = next(iter(specs.values()))
        module = build_module(first, common["concepts"], common["backbone_cfg"], cbms, seed, device)
        time_training(module, batches, 1, max(cfg.steps.warmup, 1), first.get("pad_to"), pad_id)
        del module
        gc.collect()
    per_config = {"batches": batches, "examples": examples, "pad_id": pad_id, "warmup": int(cfg.steps.warmup),
                  "timed": int(cfg.steps.timed), "inference_batches": list(cfg.inference_batches),
                  "inference_reps": int(cfg.inference_reps), "score_reps": int(cfg.steps.score_updates),
                  "amortise": amortise, "clip": trainer.get("gradient_clip_val"),
                  "interventions": int(cfg.steps.interventions)}
    dense_rate = None
    for name, spec in specs.items():
        log.info("bench: %s", name)
        entry = _in_process(isolate, bench_config, spec, **common, **per_config)
        rate = (entry.get("train_amortised") or entry["train"])["examples_per_s"]
        if dense_rate is None:
            dense_rate = rate
        entry["ratio_to_dense"] = rate / dense_rate
        entry["ratio_to_dense_no_updates"] = entry["train"]["examples_per_s"] / dense_rate
        result["configs"][name] = entry
        print(f"{name:>28}: {rate:7.2f} ex/s  x{entry['ratio_to_dense']:.3f} dense  "
              f"peak RSS {entry['train']['peak_rss_bytes'] / 2**30:.2f} GB", flush=True)
    for name, entry in result["configs"].items():  # a padded configuration against the dense one padded alike
        pad = entry["spec"].get("pad_to")
        same = next((e for n, e in result["configs"].items() if n != name and not e["spec"].get("sparsity")
                     and e["cbm"]["mode"] != "standard" and e["spec"].get("pad_to") == pad), None)
        if pad and same is not None:
            entry["ratio_to_dense_same_padding"] = entry["train"]["examples_per_s"] / same["train"]["examples_per_s"]
    if cfg.get("inference_pair"):
        names = list(cfg.inference_pair)
        result["inference_pair"] = _in_process(isolate, inference_pair, names, specs, examples=examples,
                                               inference_batches=list(cfg.inference_batches),
                                               reps=int(cfg.steps.inference_pair), **common)
    result["k_scaling"] = scaling_k(cfg, cbms, pad_id) if cfg.k_scaling else {}
    result["length_scaling"] = scaling_length(cfg, cbms, dm, batches, pad_id) if cfg.length_scaling else {}
    result["targets"] = targets(result, cfg.get("targets"))
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    out_dir = Path(cfg.paths.output_dir)
    write_json(out_dir / "bench.json", result)
    md = markdown(result)
    (out_dir / "bench.md").write_text(md)
    from sparsecbm.results import write_markdown

    write_markdown(md, cfg.get("docs_path"))
    print(md)
    return result


def _rate_pair(cfg, cbms, concepts, batches, pad_to, pad_id) -> dict[str, Any]:
    """Training ex/s (median, IQR over ``steps.scaling`` timed steps) of the dense and the sparse scaling configs."""
    from sparsecbm.config import resolve_device

    out = {}
    for key in ("dense", "sparse"):
        spec = OmegaConf.to_container(cfg.configs[cfg.scaling_configs[key]], resolve=True)
        module = build_module(spec, concepts, cfg.backbone, cbms, int(cfg.seed),
                              resolve_device(cfg.get("accelerator", "cpu")))
        stats = time_training(module, batches, int(cfg.steps.warmup), int(cfg.steps.scaling), pad_to, pad_id,
                              cfg.trainer_default.get("gradient_clip_val"))
        out[key], out[f"{key}_iqr"] = stats["examples_per_s"], stats["iqr"]
        del module
        gc.collect()
    out["steps"] = int(cfg.steps.scaling)
    return out


def scaling_k(cfg, cbms, pad_id) -> dict[str, dict[str, Any]]:
    """Training ex/s of the dense vs the sparse default for K = the first k concepts of cebab_aug (score
    updates not included: the ratio of the forward/backward passes)."""
    from hydra.utils import instantiate

    from sparsecbm.concepts import ConceptSet

    dm = instantiate(cfg.k_data)
    dm.setup()
    n = int(cfg.steps.warmup) + int(cfg.steps.scaling)
    batches = [b for _, b in zip(range(n), dm.loader("train", True, cfg.batch_size))]
    out = {}
    for k in cfg.k_scaling:
        cs = ConceptSet(dm.concept_set.concepts[:k], dm.concept_set.label)
        kb = [{**b, "concepts": b["concepts"][:, :k]} for b in batches]
        out[f"K={k}"] = _rate_pair(cfg, cbms, cs, kb, None, pad_id)
        print(f"K={k}: {out[f'K={k}']}", flush=True)
    return out


def scaling_length(cfg, cbms, dm, batches, pad_id) -> dict[str, dict[str, Any]]:
    """Training ex/s with every sequence padded/truncated to a fixed length."""
    out = {}
    for length in cfg.length_scaling:
        out[f"T={length}"] = _rate_pair(cfg, cbms, dm.concept_set, batches, length, pad_id)
        print(f"T={length}: {out[f'T={length}']}", flush=True)
    return out


register_resolvers()


@hydra_entry_point("bench")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    run(cfg)


if __name__ == "__main__":
    main()
