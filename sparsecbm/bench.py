"""Speed, memory and scaling benchmark: ``python -m sparsecbm.bench [overrides]``.

Every configuration runs on the same CEBaB batches, each in a fresh process (``isolate=true``, so its
peak RSS is its own; ``isolate=false`` runs them all in this process). Reported per config:
training examples/s (median and inter-quartile range over timed steps after warm-up), the ratio to
the dense floor measured in the same run, peak RSS while it ran (sampled), inference latency per
example at batch 1 and 32, mask memory, intervention latencies; then scaling with K and with
sequence length. Writes ``bench.json`` and ``bench.md`` (and ``docs_path`` if set).
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
from sparsecbm.timing import machine, time_inference, time_interventions, time_training

log = logging.getLogger(__name__)


def build_model(spec: dict[str, Any], concepts, backbone_cfg, seed: int = 0, device: str = "cpu"):
    """A CBM (dense or with per-concept subnetworks at a fixed sparsity) for timing, on ``device``."""
    from hydra.utils import instantiate

    from sparsecbm.models.cbm import ConceptBottleneckModel

    torch.manual_seed(seed)
    backbone = instantiate(backbone_cfg)
    sparsity = spec.get("sparsity")
    if sparsity:
        from sparsecbm.sparsity import Pruner, SubnetworkBackbone

        settings = {k: v for k, v in sparsity.items() if k != "level"}
        backbone = SubnetworkBackbone(backbone, len(concepts), **settings)
        Pruner(backbone).prune(float(sparsity.get("level", 0.7)))
    return ConceptBottleneckModel(backbone, concepts, mode=spec.get("mode", "joint")).to(device)


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
        elif metric.startswith("inference_ratio@"):
            key = f"batch_{metric.split('@')[1]}_s"
            value = r.get("inference", {}).get(key, float("nan")) / dense.get("inference", {}).get(key, float("nan"))
        elif metric == "mask_intervention_ms":  # after the example's prediction (see time_interventions)
            value = 1000 * r.get("intervention", {}).get("mask_level_s", float("nan"))
        else:
            raise ConfigError(f"bench targets: unknown metric {metric!r} (expected train_ratio, peak_rss_gb, "
                              "inference_ratio@<batch>, mask_intervention_ms, k_train_ratio@<K>)")
        met = value >= t["min"] if "min" in t else value <= t["max"]
        out.append({**t, "value": value, "met": bool(met)})
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
             + (f", GPU {m['cuda']}" if m.get("cuda") else ""), "",
             "| config | train ex/s (median [IQR]) | × dense | × dense at the same padding | peak RSS (GB) | "
             "infer ms/ex @1 | infer ms/ex @32 | mask MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["configs"].items():
        t = r["train"]
        inf = r.get("inference", {})
        fmt = lambda v: "-" if v is None else f"{1000 * v:.1f}"  # noqa: E731
        padded = r.get("ratio_to_dense_same_padding")
        mask_mb = f"{r['mask_bytes'] / 2**20:.2f}"
        if r.get("published_mask_bytes"):  # what the published code would hold: float32 per weight per concept
            mask_mb = f"{r['published_mask_bytes'] / 2**20:.2f} (float32, as published)"
        lines.append(
            f"| {name} | {t['examples_per_s']:.2f} [{t['iqr'][0]:.2f}, {t['iqr'][1]:.2f}] | {r['ratio_to_dense']:.3f} | "
            f"{'-' if padded is None else f'{padded:.3f}'} | "
            f"{t['peak_rss_bytes'] / 2**30:.2f} | {fmt(inf.get('batch_1_s'))} | {fmt(inf.get('batch_32_s'))} | "
            f"{mask_mb} |")
    for title, key in (("Scaling with K", "k_scaling"), ("Scaling with sequence length", "length_scaling")):
        rows = result.get(key) or {}
        if rows:
            lines += ["", f"{title}:", "", "| setting | dense ex/s | sparse ex/s | ratio |", "|---|---|---|---|"]
            for setting, r in rows.items():
                lines.append(f"| {setting} | {r['dense']:.2f} | {r['sparse']:.2f} | {r['sparse'] / r['dense']:.3f} |")
    rows = [(n, r["intervention"]) for n, r in result["configs"].items() if r.get("intervention")]
    if rows:
        lines += ["", "Intervention latency per intervened concept (one example; mask level after the example's "
                  "prediction, and cold: with no prediction before it):", "",
                  "| config | concept level (ms) | mask level (ms) | mask level, cold (ms) |", "|---|---|---|---|"]
        for n, iv in rows:
            mask, cold = (f"{1000 * iv[k]:.1f}" if k in iv else "-" for k in ("mask_level_s", "mask_level_cold_s"))
            lines.append(f"| {n} | {1000 * iv['concept_level_s']:.2f} | {mask} | {cold} |")
    if result.get("targets"):
        lines += ["", "Targets:", "", "| config | metric | target | measured | met |", "|---|---|---|---|---|"]
        for t in result["targets"]:
            bound = f">= {t['min']}" if "min" in t else f"<= {t['max']}"
            lines.append(f"| {t['config']} | {t['metric']} | {bound} | {t['value']:.3f} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def bench_config(spec: dict[str, Any], concepts, backbone_cfg, batches, examples, pad_id: int, warmup: int,
                 timed: int, inference_batches: list[int], inference_reps: int, threads=None, seed: int = 0,
                 device: str = "cpu") -> dict[str, Any]:
    """One configuration: training throughput and peak RSS, inference latency, intervention latency, mask bytes."""
    if threads:
        torch.set_num_threads(int(threads))
    quiet_libraries()
    model = build_model(spec, concepts, backbone_cfg, seed, device)
    steps = spec.get("steps", timed)
    train_stats = time_training(model, batches, warmup if steps > 2 else 1, steps, spec.get("pad_to"), pad_id)
    entry = {"spec": spec, "train": train_stats, "pid": os.getpid(),
             "mask_bytes": model.backbone.mask_bytes() if hasattr(model.backbone, "mask_bytes") else 0}
    if spec.get("published_masks"):  # the published code keeps one float32 mask per weight per concept
        masked = sum(layer.weight.numel() for layer in model.backbone.masked_layers().values())
        entry["published_mask_bytes"] = 4 * masked * model.backbone.state.n_masks
    if spec.get("inference", True):
        entry["inference"] = {f"batch_{bs}_s": time_inference(model, examples, bs, inference_reps)
                              for bs in inference_batches}
    if spec.get("inference", True) and spec.get("mode", "joint") != "standard":
        entry["intervention"] = time_interventions(model, examples)
    del model
    gc.collect()
    return entry


def run(cfg: DictConfig) -> dict[str, Any]:
    from hydra.utils import instantiate

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
    result: dict[str, Any] = {"machine": machine(), "batch_size": cfg.batch_size, "seed": seed, "device": device,
                              "configs": {},
                              "data": dm.describe(), "settings": OmegaConf.to_container(cfg.steps)}
    isolate = bool(cfg.get("isolate", True))
    if cfg.get("warm_start", True) and not isolate:
        # one untimed pass of the first config: the first model in a process otherwise pays one-time costs
        # (allocator growth, kernel selection) that would bias every ratio in favour of the later configs
        first = OmegaConf.to_container(next(iter(cfg.configs.values())), resolve=True)
        model = build_model(first, dm.concept_set, cfg.backbone, seed, device)
        time_training(model, batches, 1, max(cfg.steps.warmup, 1), first.get("pad_to"), pad_id)
        del model
        gc.collect()
    common = {"concepts": dm.concept_set, "backbone_cfg": OmegaConf.to_container(cfg.backbone, resolve=True),
              "batches": batches, "examples": examples, "pad_id": pad_id, "warmup": int(cfg.steps.warmup),
              "timed": int(cfg.steps.timed), "inference_batches": list(cfg.inference_batches),
              "inference_reps": int(cfg.inference_reps), "threads": cfg.threads, "seed": seed, "device": device}
    dense_rate = None
    for name, spec in cfg.configs.items():
        spec = OmegaConf.to_container(spec, resolve=True)
        log.info("bench: %s", name)
        if isolate:  # a fresh process per configuration: its peak RSS is its own, not the run's history
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                entry = pool.submit(bench_config, spec, **common).result()
        else:
            entry = bench_config(spec, **common)
        train_stats = entry["train"]
        if dense_rate is None:
            dense_rate = train_stats["examples_per_s"]
        entry["ratio_to_dense"] = train_stats["examples_per_s"] / dense_rate
        result["configs"][name] = entry
        print(f"{name:>28}: {train_stats['examples_per_s']:7.2f} ex/s  x{entry['ratio_to_dense']:.3f} dense  "
              f"peak RSS {train_stats['peak_rss_bytes'] / 2**30:.2f} GB", flush=True)
    for name, entry in result["configs"].items():  # a padded configuration against the dense one padded alike
        pad = entry["spec"].get("pad_to")
        same = next((e for n, e in result["configs"].items() if n != name and not e["spec"].get("sparsity")
                     and e["spec"].get("mode", "joint") != "standard" and e["spec"].get("pad_to") == pad), None)
        if pad and same is not None:
            entry["ratio_to_dense_same_padding"] = entry["train"]["examples_per_s"] / same["train"]["examples_per_s"]
    result["k_scaling"] = scaling_k(cfg, pad_id) if cfg.k_scaling else {}
    result["length_scaling"] = scaling_length(cfg, dm, batches, pad_id) if cfg.length_scaling else {}
    result["targets"] = targets(result, cfg.get("targets"))
    out_dir = Path(cfg.paths.output_dir)
    write_json(out_dir / "bench.json", result)
    md = markdown(result)
    (out_dir / "bench.md").write_text(md)
    from sparsecbm.results import write_markdown

    write_markdown(md, cfg.get("docs_path"))
    print(md)
    return result


def _rate_pair(cfg, concepts, batches, pad_to, pad_id) -> dict[str, float]:
    from sparsecbm.config import resolve_device

    out = {}
    for key, spec in (("dense", {"mode": "joint"}), ("sparse", OmegaConf.to_container(cfg.configs[cfg.scaling_config]))):
        model = build_model(spec, concepts, cfg.backbone, int(cfg.seed), resolve_device(cfg.get("accelerator", "cpu")))
        out[key] = time_training(model, batches, 1, cfg.steps.scaling, pad_to, pad_id)["examples_per_s"]
        del model
        gc.collect()
    return out


def scaling_k(cfg, pad_id) -> dict[str, dict[str, float]]:
    """Training ex/s of dense vs the sparse default for K = the first k concepts of cebab_aug."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.k_data)
    dm.setup()
    batches = [b for _, b in zip(range(cfg.steps.scaling + 1), dm.loader("train", True, cfg.batch_size))]
    out = {}
    for k in cfg.k_scaling:
        from sparsecbm.concepts import ConceptSet

        cs = ConceptSet(dm.concept_set.concepts[:k], dm.concept_set.label)
        kb = [{**b, "concepts": b["concepts"][:, :k]} for b in batches]
        out[f"K={k}"] = _rate_pair(cfg, cs, kb, None, pad_id)
        print(f"K={k}: {out[f'K={k}']}", flush=True)
    return out


def scaling_length(cfg, dm, batches, pad_id) -> dict[str, dict[str, float]]:
    """Training ex/s with every sequence padded/truncated to a fixed length."""
    out = {}
    for length in cfg.length_scaling:
        out[f"T={length}"] = _rate_pair(cfg, dm.concept_set, batches[: cfg.steps.scaling + 1], length, pad_id)
        print(f"T={length}: {out[f'T={length}']}", flush=True)
    return out


register_resolvers()


@hydra_entry_point("bench")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    run(cfg)


if __name__ == "__main__":
    main()
