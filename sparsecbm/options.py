"""Every option with a valid range, declared once, and checked before anything heavy runs.

:data:`SCHEMA` lists, per command (config name), the options whose values can be wrong: numbers with a
range, names from a fixed set, booleans, non-empty texts, files and folders that must exist, a TCP port
that must be free. ``cbm.*`` and ``sparsity.schedule.*`` (:data:`CBM`, :data:`SCHEDULE`) are also what
:class:`~sparsecbm.models.cbm_config.CBMConfig` and :class:`~sparsecbm.sparsity.schedule.Schedule` check
themselves with (:func:`check_object`), so a model built from Python reads the same declaration. :func:`check_options` runs in :func:`sparsecbm.config.hydra_entry_point` before
the command's task, so no command can skip it; a bad value ends with exit code 2 and one message naming
the option, the value and what is expected::

    error: data.batch_size=0 is not valid; expected an integer >= 1 (examples per training batch)

A key absent from the composed config (a group not selected, e.g. no ``sparsity``) is not checked.
``tests/test_options.py`` derives a bad value from every declaration and checks the message, and walks
every composed config so that a new numeric option without a declaration fails the suite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sparsecbm.errors import ConfigError
from sparsecbm.option_checks import _MISSING, _num, _value, path_message

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Option:
    """One option's valid values.

    Args:
        key: Dotted config key (``data.batch_size``).
        kind: ``int`` | ``float`` | ``bool`` | ``choice`` | ``text`` (a non-empty string) | ``file`` | ``dir``
            | ``port`` (an integer 1..65535 that can be bound) | ``seed`` (any integer).
        low / high: Bounds of ``int`` / ``float``; ``low_open`` / ``high_open`` exclude them.
        choices: ``choice``: the valid names; ``file``/``dir``: literal values accepted as they are.
        null: ``null`` is valid (off / default).
        each: The value is a list (a single value is accepted as one item); every item is checked.
        help: What the option is, appended to the message.
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    null: bool = False
    each: bool = False
    help: str = ""

    def expected(self) -> str:
        """What a valid value looks like, in words."""
        if self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a value"
            if self.low is not None and self.high is not None:
                text = (f"{noun} in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                        f"{')' if self.high_open else ']'}")
            elif self.low is not None:
                text = f"{noun} {'>' if self.low_open else '>='} {_num(self.low)}"
            elif self.high is not None:
                text = f"{noun} {'<' if self.high_open else '<='} {_num(self.high)}"
            else:
                text = noun
        else:
            text = {"bool": "true or false", "choice": f"one of {list(self.choices)}", "seed": "an integer",
                    "text": "a non-empty text", "file": "an existing file", "dir": "an existing folder",
                    "path": "an existing file or folder", "outfile": "a file path to write (not a folder)",
                    "port": "a free TCP port number in 1..65535"}[self.kind]
        if self.each:
            text += ", or a list of them"
        return text + (" or null" if self.null else "")

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is valid, else the message."""
        if value is None:
            return None if self.null else self._message(value)
        items = list(value) if self.each and isinstance(value, (list, tuple)) else [value]
        if not items and self.kind == "text":  # text=[]: nothing to work on is not "all of the split"
            return self._message(value)
        for item in items:
            if not self._valid(item):
                return self._message(value if not self.each else item)
        return None

    def _valid(self, v: Any) -> bool:
        if self.kind in ("int", "seed"):
            if isinstance(v, bool) or not isinstance(v, int):
                return False
            return self.kind == "seed" or self._in_range(v)
        if self.kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return False
            return self._in_range(float(v))
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "choice":
            return v in self.choices
        if self.kind == "text":
            return isinstance(v, str) and bool(v.strip())
        if self.kind in ("file", "dir", "path"):
            if v in self.choices:
                return True
            path = Path(str(v)).expanduser()
            return {"file": path.is_file, "dir": path.is_dir, "path": path.exists}[self.kind]()
        if self.kind == "outfile":  # a file to write: not an existing folder, not under a file
            path = Path(str(v)).expanduser()
            return bool(str(v).strip()) and not path.is_dir() and not any(p.is_file() for p in path.parents)
        if self.kind == "port":
            return not isinstance(v, bool) and isinstance(v, int) and 1 <= v <= 65535
        raise ValueError(f"unknown option kind {self.kind!r}")

    def _in_range(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (self.high is not None and (v > self.high or (self.high_open and v == self.high)))

    def _message(self, value: Any) -> str:
        shown = "null" if value is None else repr(value) if isinstance(value, str) else value
        return path_message(self, value) or (f"{self.key}={shown} is not valid; expected {self.expected()}"
                                             + (f" ({self.help})" if self.help else ""))


def check_object(obj: Any, declared: Iterable[Option]) -> None:
    """Check the attributes of a config object (:class:`~sparsecbm.models.cbm_config.CBMConfig`,
    :class:`~sparsecbm.sparsity.schedule.Schedule`) against ``declared``; the option key's last part is the
    attribute name. Raises a :class:`~sparsecbm.errors.ConfigError` naming the first bad one."""
    for option in declared:
        name = option.key.rsplit(".", 1)[-1]
        if hasattr(obj, name):
            message = option.problem(getattr(obj, name))
            if message:
                raise ConfigError(message)


#: ``cbm.*`` (:class:`~sparsecbm.models.cbm_config.CBMConfig` checks itself with these)
CBM = [
    Option("cbm.mode", "choice", choices=("standard", "joint", "sequential", "independent")),
    Option("cbm.activation", "choice", choices=("logits", "probs", "hard", "embedding")),
    Option("cbm.embedding_dim", "int", 1),
    Option("cbm.label_head", "choice", choices=("linear", "mlp")),
    Option("cbm.mlp_hidden", "int", 1),
    Option("cbm.dropout", "float", 0, 1, high_open=True),
    # a negative weight would train the concept heads to be wrong (it maximises the concept loss)
    Option("cbm.concept_loss_weight", "float", 0, help="weight of the concept loss beside the task loss"),
    Option("cbm.concept_class_weight", "choice", choices=("none", "balanced", "sqrt"), null=True),
    Option("cbm.label_class_weight", "choice", choices=("none", "balanced", "sqrt"), null=True),
    Option("cbm.label_logit_adjust", "float", 0, help="tau of the logit-adjusted task loss; 0 is off"),
    Option("cbm.label_epochs", "int", 0),
    Option("cbm.train_intervention_prob", "float", 0, 1),
    Option("cbm.prototype_prob", "float", 0, 1),
    Option("cbm.residual_dim", "int", 0, null=True),
    Option("cbm.residual_penalty", "float", 0),
    Option("cbm.residual_drop_prob", "float", 0, 1, null=True),
    Option("cbm.tokens", "choice", choices=("none", "gates", "attention"), null=True),
    Option("cbm.token_budget", "float", 0, 1, low_open=True, help="share of tokens each concept keeps"),
    Option("cbm.token_penalty", "float", 0),
    Option("cbm.token_init_open", "float", help="initial log-odds of the token gates"),
    Option("cbm.label_sparsity", "choice", choices=("none", "l1", "topk"), null=True),
    Option("cbm.label_l1", "float", 0),
    Option("cbm.label_topk", "int", 1),
    Option("cbm.counterfactual_weight", "float", 0), Option("cbm.teacher_weight", "float", 0, 1),
    Option("cbm.teacher", "text", null=True, help="a checkpoint to imitate"),  # a path: checked at fit start
]
#: ``sparsity.schedule.*`` (:class:`~sparsecbm.sparsity.schedule.Schedule` checks itself with these)
SCHEDULE = [
    Option("sparsity.schedule.init_sparsity", "float", 0, 1, high_open=True),
    Option("sparsity.schedule.final_sparsity", "float", 0, 1, high_open=True, help="share of masked weights at the end"),
    Option("sparsity.schedule.start", "float", 0),
    Option("sparsity.schedule.end", "float", 0),
    Option("sparsity.schedule.unit", "choice", choices=("fraction", "epoch", "step")),
    Option("sparsity.schedule.kind", "choice", choices=("cubic", "linear")),
    Option("sparsity.schedule.every", "int", 1, help="steps between mask updates"),
    Option("sparsity.schedule.scope", "choice", choices=("layer", "global")),
]


def _data(prefix: str = "data.") -> list[Option]:
    """A full data config (train, annotate, bench)."""
    return [
        Option(prefix + "batch_size", "int", 1, help="examples per training batch"),
        Option(prefix + "eval_batch_size", "int", 1, help="examples per evaluation batch"),
        Option(prefix + "max_length", "int", 8, help="tokens read per text"),
        Option(prefix + "num_workers", "int", 0, help="data-loading processes"),
        Option(prefix + "num_concepts", "int", 1, null=True),
        Option(prefix + "limit.train", "int", 1, null=True, help="first N training rows; null: all"),
        Option(prefix + "limit.dev", "int", 1, null=True, help="first N dev rows; null: all"),
        Option(prefix + "limit.test", "int", 1, null=True, help="first N test rows; null: all"),
        Option(prefix + "missing_concept", "choice", choices=("error", "unknown")),
        Option(prefix + "root", "dir", null=True, help="a folder with the train/dev/test files"),
    ]


#: ``data.*`` overrides of the inference commands (applied to the checkpoint's own data config).
DATA_OVERRIDES = [
    Option("data.root", "dir", null=True, help="a folder with the train/dev/test files"),
    Option("data.max_length", "int", 8, null=True, help="tokens read per text; null: the checkpoint's"),
    Option("data.missing_concept", "choice", choices=("error", "unknown"), null=True),
    Option("data.batch_size", "int", 1, null=True),
    Option("data.eval_batch_size", "int", 1, null=True),
]
CKPT = Option("ckpt_path", "file", help="a checkpoint written by training: <run>/checkpoints/best.ckpt")
COMMON = [Option("seed", "seed"), Option("accelerator", "choice", choices=("auto", "cpu", "gpu", "cuda"))]


def _train() -> list[Option]:
    return [
        *COMMON, *_data(), *CBM, *SCHEDULE,
        Option("test", "bool"),
        Option("keep_last_checkpoint", "bool"),
        Option("init_from", "file", null=True, help="a trained checkpoint to start from"),
        Option("model.optimizer.lr", "float", 0, low_open=True, help="backbone learning rate"),
        Option("model.optimizer.weight_decay", "float", 0),
        Option("model.head_lr", "float", 0, low_open=True, help="concept heads' learning rate"),
        Option("model.label_lr", "float", 0, low_open=True, help="label head's learning rate"),
        Option("model.warmup_ratio", "float", 0, 1, high_open=True, help="share of steps with a rising rate"),
        Option("model.select", "choice", choices=("label", "label+concept"), help="what picks the best checkpoint"),
        Option("trainer.max_epochs", "int", 1),
        Option("trainer.log_every_n_steps", "int", 1),
        Option("trainer.gradient_clip_val", "float", 0, null=True),
        Option("trainer.num_sanity_val_steps", "int", -1),
        Option("trainer.accumulate_grad_batches", "int", 1),
        Option("trainer.deterministic", "bool"),
        Option("trainer.enable_model_summary", "bool"),
        Option("trainer.use_distributed_sampler", "bool"),
        Option("backbone.pretrained", "bool"),
        Option("backbone.gradient_checkpointing", "bool"),
        Option("backbone.pooling", "choice", choices=("mean", "cls", "last")),
        Option("backbone.dtype", "choice", choices=("float32", "fp32", "bfloat16", "bf16", "float16", "fp16"), null=True),
        Option("sparsity.granularity", "choice", choices=("unstructured", "neuron", "head", "structured")),
        Option("sparsity.impl", "choice", choices=("batched", "naive")),
        Option("sparsity.shared", "bool"),
        Option("sparsity.masked_layers", "int", each=True, null=True, help="block indices; negative from the top"),
        Option("sparsity.scorer.batches", "int", 1),
        Option("sparsity.scorer.seed", "seed", null=True),
        Option("random_control", "bool"),
        Option("callbacks.progress_log.every_n_steps", "int", 1, help="steps between progress lines in the log"),
    ]


def _inference() -> list[Option]:
    """conf/inference/default.yaml: what every inference command shares."""
    return [*COMMON, CKPT, *DATA_OVERRIDES,
            Option("logit_eps", "float", 0, 1, low_open=True, high_open=True, help="logit floor of a set distribution"),
            Option("mask_portion", "float", 0, 1, low_open=True, help="share of a layer's kept mask entries swapped")]


def _intervene() -> list[Option]:
    return [
        *_inference(),
        Option("text", "text", null=True, help="the text to intervene on; null: a data split"),
        Option("split", "choice", choices=SPLITS),
        Option("random_seeds", "int", 1, help="seeds the random policy is averaged over"),
        Option("batch_size", "int", 1),
        Option("plot", "bool"),
        Option("level", "choice", choices=("concept", "mask")),
        Option("mask.examples", "int", 1, help="examples intervened on"),
        Option("mask.holdout", "int", 0, help="examples where breakage is measured"),
        Option("mask.modes", "choice", choices=("restore", "online"), each=True),
    ]


def _explain() -> list[Option]:
    return [
        *_inference(),
        Option("text", "text", null=True, each=True, help="a text or a list of texts; null: n examples of split"),
        Option("split", "choice", choices=SPLITS),
        Option("n", "int", 1, help="examples of the split to explain"),
        Option("batch_size", "int", 1),
        Option("pngs", "int", 0),
        Option("explanations", "bool"), Option("report", "bool"), Option("faithfulness", "bool"),
        Option("attribution.n_steps", "int", 1), Option("attribution.internal_batch_size", "int", 1),
        Option("attribution.n_samples", "int", 1), Option("attribution.shapley_samples", "int", 1),
        Option("attribution.perturbations_per_eval", "int", 1),
        Option("fractions", "float", 0, 1, low_open=True, each=True, help="token shares removed"),
        Option("deletion_steps", "int", 1),
        Option("concepts", "choice", choices=("all", "round_robin")),
        Option("units", "bool", help="per-example subnetwork unit attribution (sparse models)"),
    ]


def _serve() -> list[Option]:
    return [
        *_inference(),
        Option("compare_ckpt_path", "file", null=True, help="a second checkpoint for the Compare view"),
        Option("split", "choice", choices=SPLITS),
        Option("port", "port"),
        Option("random_seeds", "int", 1),
        Option("limits.max_text_chars", "int", 1), Option("limits.max_body_bytes", "int", 1),
        Option("limits.cache_size", "int", 1), Option("limits.max_examples", "int", 1),
        Option("limits.split_batch_size", "int", 1, help="examples per chunk of the background dataset pass"),
        Option("bench.texts", "int", 1), Option("bench.edits", "int", 1), Option("bench.mask_texts", "int", 0),
        Option("bench.warmup", "int", 0), Option("bench.threads", "int", 1, null=True), Option("bench.dataset", "bool"),
    ]


def _annotate() -> list[Option]:
    return [
        *COMMON, *_data(),
        Option("annotator", "choice", choices=("embedding", "llm")),
        Option("calibration", "choice", choices=("threshold", "logreg", "probe")),
        Option("calibration_split", "choice", choices=SPLITS),
        Option("default_tau", "float", 0, 1),
        Option("embedding.batch_size", "int", 1), Option("embedding.max_length", "int", 8),
        Option("llm.batch_size", "int", 1), Option("llm.max_length", "int", 8), Option("llm.length_norm", "bool"),
        Option("discover", "bool"),
        Option("discovery.clusters", "int", 2), Option("discovery.candidates", "int", 1),
        Option("discovery.min_support", "float", 0, 1), Option("discovery.phrases", "int", 1),
        Option("discovery.max_concepts", "int", 1), Option("discovery.split", "choice", choices=SPLITS),
    ]


def _renamed(declared: list[Option], old: str, new: str) -> list[Option]:  # a group composed at another package
    return [replace(o, key=new + o.key[len(old):]) for o in declared if o.key.startswith(old)]


def _bench() -> list[Option]:
    train = _train() + [Option("trainer.devices", "int", 1)]
    return [  # + the cbm configs the bench's configurations name, the default sparsity and the default trainer
        *COMMON, *_data(), *[o for o in _data("k_data.") if o.key != "k_data.root"],
        *[o for name in ("standard", "joint", "cem") for o in _renamed(CBM, "cbm.", f"cbms.{name}.")],
        *_renamed(train, "sparsity.", "sparsity_default."), *_renamed(train, "trainer.", "trainer_default."),
        Option("threads", "int", 1, null=True), Option("batch_size", "int", 1),
        Option("steps.warmup", "int", 0), *[Option(f"steps.{k}", "int", 1) for k in (
            "timed", "scaling", "score_updates", "inference_pair", "interventions")],
        Option("inference_batches", "int", 1, each=True), Option("inference_reps", "int", 1),
        Option("k_scaling", "int", 1, each=True), Option("length_scaling", "int", 8, each=True),
        Option("isolate", "bool"), Option("warm_start", "bool"), Option("quick", "bool"),
        Option("backbone.pretrained", "bool"), Option("backbone.gradient_checkpointing", "bool"),
    ]


def _causal() -> list[Option]:
    explainers = ("auto", "hard", "soft", "mask", "mask_hard", "conexp", "approx", "approx_matched", "proxy", "proxy_delta")
    return [*_inference(), Option("split", "choice", choices=SPLITS),
            Option("proxy_ckpt", "file", null=True), Option("explainers", "choice", choices=explainers, each=True),
            Option("batch_size", "int", 1), Option("plot", "bool"), Option("mask.max_pairs", "int", 1, null=True)]


def _label_refit() -> list[Option]:
    return [
        *_inference(),
        Option("split", "choice", choices=SPLITS),
        Option("topk", "int", 1, each=True, help="concepts kept per label"),
        Option("l1", "float", 0, low_open=True, each=True, help="L1 weights"),
        Option("steps", "int", 1), Option("lr", "float", 0, low_open=True),
    ]


def _tables() -> list[Option]:
    return [Option("runs", "path", each=True, help="run folders, their parents or results.json files"),
            Option("kind", "choice", choices=("accuracy", "bottleneck")), Option("out", "outfile", null=True)]


def _aggregate() -> list[Option]:
    return [Option("multirun_dir", "dir", help="a multirun folder, outputs/train/multiruns/<date_time>"),
            Option("out", "outfile", null=True)]


#: config name -> the function listing its options
SCHEMA: dict[str, Callable[[], list[Option]]] = {
    "train": _train, "evaluate": _inference, "intervene": _intervene, "explain": _explain, "serve": _serve,
    "annotate": _annotate, "bench": _bench, "label_refit": _label_refit, "tables": _tables, "aggregate": _aggregate,
    "causal": _causal,
}


def options(command: str) -> list[Option]:
    """The declared options of ``command`` (a config name); ``[]`` for a command without a schema."""
    return SCHEMA[command]() if command in SCHEMA else []


def check_options(command: str, cfg: DictConfig, extra: Iterable[Option] = (), cross: bool = True) -> None:
    """Raise a :class:`~sparsecbm.errors.ConfigError` for the first declared option of ``command`` whose value
    in ``cfg`` is not valid, then (``cross``) run the command's cross-option checks (:data:`sparsecbm.option_checks.CROSS_CHECKS`)."""
    for option in [*options(command), *extra]:
        value = _value(cfg, option.key)
        if value is _MISSING:
            continue
        message = option.problem(value)
        if message:
            raise ConfigError(message)
    from sparsecbm.option_checks import CROSS_CHECKS

    for check in CROSS_CHECKS.get(command, ()) if cross else ():
        check(cfg)
