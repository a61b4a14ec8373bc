"""Train and test a concept-bottleneck model: ``python -m sparsecbm.train [overrides]`` (or ``bash run.sh``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# torch and Lightning are imported where they are used, after the config and the data source are checked:
# a user error (a bad option, data that cannot be found) is answered in about a second
from sparsecbm.config import hydra_entry_point, resolve_device
from sparsecbm.data.loading import preflight
from sparsecbm.errors import CheckpointError
from sparsecbm.outputs import check_free_space
from sparsecbm.results import cbm_title, check_optimized_metric, summary_table

if TYPE_CHECKING:
    from sparsecbm.run_result import RunResult

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``last`` means this run folder's ``checkpoints/last.ckpt``; a missing file is an error, not a fresh start."""
    if ckpt_path in (None, "", "null"):
        return None
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (ckpt_path=last looks in the run folder: pass hydra.run.dir=<the interrupted run>)" if ckpt_path == "last" else ""
        if ckpt_path == "last" and (Path(output_dir) / "results.json").is_file():
            hint = (" (the run in this folder finished: results.json is there, and a finished run removes last.ckpt; "
                    "train with keep_last_checkpoint=true to keep it for training on)")
        raise CheckpointError(f"cannot resume: checkpoint {path} does not exist{hint}")
    from sparsecbm.checkpoint import read_checkpoint

    read_checkpoint(path)  # a truncated file or another format version: a clear message, not Lightning's
    return str(path)


def check_backbone_source(cfg: DictConfig) -> None:
    """A local model folder that is missing or not a model folder: a message before the tokenizer loads."""
    from sparsecbm.models.source import check_model_source

    bb = cfg.get("backbone") or {}
    if bb.get("pretrained", True) or not (bb.get("config") or {}).get("model_type"):
        check_model_source(bb.get("name_or_path"))
    if bb.get("tokenizer") not in (None, bb.get("name_or_path")):
        check_model_source(bb.get("tokenizer"), "backbone.tokenizer")


def subnetwork_outputs(module, output_dir: Path, write: bool = True, loader=None) -> dict[str, Any]:
    """Statistics of the selected checkpoint's subnetworks (an error unless it is at the final sparsity),
    the cross-mask matrix on ``loader``, plus subnetworks.csv/png, cross_mask.png and masks.safetensors."""
    from sparsecbm.sparsity import cross_mask, export_masks, subnetwork_stats, write_reports

    sb, names = module.model.backbone, module.concept_set.names
    if not sb.at_final_sparsity():
        raise RuntimeError(f"sparsity: the selected checkpoint has its masks at sparsity {float(sb.mask_level):.4f}, "
                           f"not the final {sb.final_sparsity}")
    stats = subnetwork_stats(sb, names)
    cm = cross_mask(module.model, loader) if loader is not None and not sb.shared and len(names) > 1 else None
    if cm is not None:
        stats["cross_mask"], stats["specificity"] = cm.matrix, cm.specificity
        stats["own_mask_best"] = cm.own_best
    if not write:  # another data-parallel rank: rank 0 writes the (identical) reports
        return stats
    files = write_reports(stats, output_dir)
    stats["files"] = {k: str(v) for k, v in files.items()}
    stats["files"]["masks"] = str(export_masks(sb, names, output_dir / "masks.safetensors"))
    if cm is not None:
        stats["files"]["cross_mask"] = str(cm.plot(output_dir / "cross_mask.png"))
    return stats


def to_training_device(trainer, module) -> None:
    """Lightning moves the model to the CPU when a stage ends; the analyses after testing (interventions,
    leakage, cross-mask) run on the device it trained on instead (sharded FSDP models stay where they are)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy):
        module.to(trainer.strategy.root_device)


def peak_memory() -> dict[str, int | None]:
    """This process's peak resident set size (bytes, since it started: data, model, training and the analyses
    after testing) and, on a GPU, the peak CUDA memory torch allocated (``None`` without CUDA)."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    cuda = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"peak_rss_bytes": int(rss), "peak_cuda_bytes": cuda}


def random_control(cfg: DictConfig, output_dir: Path, stats: dict[str, Any]) -> dict[str, Any]:
    """``random_control=true``: train the same run again with fixed random per-concept masks
    (``sparsity/scorer=random``: same seed, data, blocks, schedule and sparsity) into
    ``output_dir/random_control`` and return what its cross-mask matrix reaches beside this run's.

    A separate training is needed because the control must include what it controls for: every concept
    head adapts to the mask it trains under, so a trained head prefers its own mask whichever units the
    mask keeps. Arbitrary masks on *this* model would only show that adaptation again.
    """
    sub = OmegaConf.to_container(cfg, resolve=False)
    sub["random_control"] = False
    sub["sparsity"]["scorer"] = {"_target_": "sparsecbm.sparsity.RandomScorer", "seed": int(cfg.seed)}
    sub["paths"]["output_dir"] = str(output_dir / "random_control")
    log.info("random_control: training the random-mask control into %s", sub["paths"]["output_dir"])
    control, _ = train(OmegaConf.create(sub))
    c = control.subnetworks or {}
    own, ctrl = stats.get("specificity") or {}, c.get("specificity") or {}
    return {
        "scorer": "random", "results": str(output_dir / "random_control" / "results.json"),
        "specificity": ctrl, "own_mask_best": c.get("own_mask_best"), "cross_mask": c.get("cross_mask"),
        "mean_jaccard": c.get("mean_jaccard"),
        "test_label_f1": control.metric("test/label/f1"), "test_concept_f1": control.metric("test/concept/f1"),
        # what this run's scorer adds beyond heads adapting to any masks (per concept, in F1 units)
        "specificity_above_control": {k: own[k] - ctrl[k] for k in own if k in ctrl},
    }


def checkpoint_bytes(module) -> int:
    """Disk a run's checkpoints need at most: best.ckpt (weights) plus last.ckpt (weights and AdamW's two
    moment estimates of the trainable ones), each briefly twice while its new version is written."""
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    moments = sum(2 * p.numel() * 4 for p in module.parameters() if p.requires_grad)
    return 2 * weights + 2 * (weights + moments)


#: what the label head reads, in words (cbm.activation)
def describe_model(cfg: DictConfig, choices: dict[str, str] | None = None) -> str:
    """The trained model in words for the summary header: :func:`~sparsecbm.results.cbm_title` and the
    sparsity config (its name among Hydra's ``choices``), e.g. ``cem (joint, concept embeddings) + structured
    sparsity 0.7``."""
    text = cbm_title(cfg.get("cbm") or {})
    if cfg.get("sparsity") and "_target_" in cfg.sparsity:
        if choices is None:
            from hydra.core.hydra_config import HydraConfig

            choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
        choice = choices.get("sparsity")
        final = (cfg.sparsity.get("schedule") or {}).get("final_sparsity")
        text += f" + {choice or 'per-concept'} sparsity" + (f" {final}" if final is not None else "")
    return text


def count_params(module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in module.parameters()),
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }


def build(cfg: DictConfig):
    """Instantiate datamodule (set up), LightningModule, callbacks, loggers and trainer from a config."""
    import lightning as L
    from lightning.pytorch.callbacks import ProgressBar

    from sparsecbm.callbacks import AtomicCheckpointIO, CheckpointMetadata
    from sparsecbm.callbacks.checkpoints import CommitRun
    from sparsecbm.callbacks.progress import interactive
    from sparsecbm.checkpoint import model_state, read_checkpoint

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    backbone = instantiate(cfg.backbone)
    sparse = bool(cfg.get("sparsity")) and "_target_" in cfg.sparsity
    if sparse:  # every concept gets its own masked subnetwork of the backbone
        backbone = instantiate(cfg.sparsity)(backbone=backbone, n_concepts=len(datamodule.concept_set))
    module = instantiate(cfg.model)(backbone=backbone, concepts=datamodule.concept_set)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("init_from"):  # start from a trained model's weights; new modules (e.g. token gates) stay fresh
        state = model_state(read_checkpoint(cfg.init_from))
        missing, unexpected = module.model.load_state_dict(state, strict=False)
        log.info("init_from %s: new parameters %s, ignored %s", cfg.init_from, missing, unexpected)
    # a group entry set to null (callbacks.progress_bar=null) is switched off
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(CheckpointMetadata())  # the checkpoint format (sparsecbm.checkpoint), never switched off
    callbacks.append(CommitRun())  # training started: the run folder is kept whatever happens next
    # a progress bar draws on a terminal only; redirected to a file, ProgressLog's lines are the progress
    bar = interactive()
    if not bar:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if sparse:
        from sparsecbm.callbacks.pruning import PruningCallback

        callbacks.append(PruningCallback(seed=cfg.seed))
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()],
                          **({} if bar else {"enable_progress_bar": False}))
    for lg in trainer.loggers:  # the resolved config, flattened (wandb config, CSV hparams.yaml)
        lg.log_hyperparams(flat_config(module.run_config))
    return datamodule, module, trainer


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``; lists become strings."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "/"))
        else:
            out[key] = str(v) if isinstance(v, (list, tuple)) else v
    return out


def train(cfg: DictConfig) -> tuple[RunResult, dict[str, Any]]:
    """Fit, then validate and test the best checkpoint; write ``results.json``. Returns (result, objects).

    The result is a :class:`~sparsecbm.run_result.RunResult` (it also reads as the ``results.json`` mapping).
    """
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    metric = check_optimized_metric(cfg.get("optimized_metric") or "val/label/f1")
    preflight(cfg.data)  # no data source (offline hub, missing folder): fail before loading any model
    check_backbone_source(cfg)
    from sparsecbm.callbacks import Throughput
    from sparsecbm.callbacks.checkpoints import remove_last
    from sparsecbm.ceiling import ConceptCeiling
    from sparsecbm.interpret.causal_explainers import icace_block
    from sparsecbm.interpret.leakage import split_report
    from sparsecbm.run_result import RunResult, stage_result
    from sparsecbm.session import InferenceSession

    resolve_device(cfg.get("accelerator", "auto"))  # accelerator=gpu without CUDA: a message, not Lightning's
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), str(output_dir))
    datamodule, module, trainer = build(cfg)
    if module.model.has_concepts:
        check_optimized_metric(metric, datamodule.concept_set.names)
    if trainer.is_global_zero:  # the checkpoints must fit: fail now, not after the first epoch
        check_free_space(output_dir, checkpoint_bytes(module), "training (best.ckpt and last.ckpt, written atomically)")
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    names = datamodule.concept_set.names if module.model.has_concepts else []
    ceiling = ConceptCeiling.from_datamodule(datamodule)  # the concept set's ceiling, fitted once per run
    val = trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
    stages = {"val": stage_result(val, "val", names)}
    if cfg.get("test", True):
        test = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
        to_training_device(trainer, module)
        # interventions, the concept set's ceiling and leakage (best checkpoint, loaded by trainer.test)
        report = split_report(module.model, datamodule.loader("test"), ceiling, datamodule.loader("train"))
        # counterfactual faithfulness on the test split's human counterfactual pairs, when the data has them
        session = InferenceSession.for_model(module.model, module.cbm, {"max_length": datamodule.max_length})
        if (block := icace_block(session, datamodule, "test")) is not None:
            report["icace"] = block
        stages["test"] = stage_result(test, "test", names, report)

    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    subnetworks = None
    if module.model.sparse:
        subnetworks = subnetwork_outputs(module, output_dir, write=trainer.is_global_zero,
                                         loader=datamodule.loader("test") if cfg.get("test", True) else None)
        if cfg.get("random_control") and trainer.is_global_zero:
            subnetworks["random_control"] = random_control(cfg, output_dir, subnetworks)
    result = RunResult.collect(
        stages=stages, model=module.model, datamodule=datamodule, ceiling=ceiling,
        run={
            "task_name": cfg.task_name,
            "output_dir": str(output_dir),
            "seed": int(cfg.seed),
            "epochs": int(trainer.current_epoch),
            "global_steps": int(trainer.global_step),
            "best_checkpoint": best,
            "best_val_select": float(ckpt_cb.best_model_score) if best and ckpt_cb.best_model_score is not None else None,
            "resumed_from": ckpt_path,
            "wall_time_s": round(time.perf_counter() - start, 2),
            # every data-parallel rank trains on its own examples at about the same rate
            "train_examples_per_s": round(throughput.examples_per_second * trainer.world_size, 2)
            if throughput else None,
            "world_size": int(trainer.world_size),
            **peak_memory(),
        },
        facts={"label_head": cfg.cbm.label_head, "backbone": cfg.backbone.name_or_path,
               "pooling": cfg.backbone.pooling, "n_params": count_params(module.model)},
        config=OmegaConf.to_container(cfg, resolve=True),
        subnetworks=subnetworks,
    )
    if trainer.is_global_zero:  # data parallel: every rank holds the same results; one writes them
        result.save(output_dir)
        if not cfg.get("keep_last_checkpoint", False):  # last.ckpt only serves to resume; the run is finished
            freed = remove_last(output_dir / "checkpoints" / "last.ckpt", best)
            if freed:
                log.info("removed checkpoints/last.ckpt (%.0f MB; keep_last_checkpoint=true keeps it)", freed / 1e6)
        from rich.console import Console

        from sparsecbm.tracking import log_run_outputs

        log_run_outputs(trainer.loggers, result, output_dir)
        Console().print(summary_table(result, f"{cfg.task_name}: {describe_model(cfg)} ({output_dir})"))
        log.info("results written to %s", output_dir / "results.json")
    return result, {"datamodule": datamodule, "module": module, "trainer": trainer}


@hydra_entry_point("train")
def main(cfg: DictConfig) -> float:
    result, _ = train(cfg)
    return result.metric(cfg.get("optimized_metric") or "val/label/f1")  # what a sweeper optimises


if __name__ == "__main__":
    main()
