"""The checkpoint format, written and read here: :class:`CheckpointMeta` and :func:`load_model`.

A sparsecbm checkpoint is a Lightning checkpoint with one more entry, ``checkpoint["sparsecbm"]``: the
concepts, the flat ``cbm`` options, the backbone's Hugging Face config and the sparsity settings
(:class:`CheckpointMeta`). :class:`~sparsecbm.callbacks.CheckpointMetadata` (a Lightning callback that ``train`` adds to
every trainer) writes it; :func:`read_checkpoint` checks a file; :func:`load_model` rebuilds the
:class:`~sparsecbm.models.cbm.ConceptBottleneckModel` from it, offline and without the config files, the
training module or a Trainer (inference starts from a model and its metadata, as in nanoGPT's ``sample.py``).

Example:
    >>> model, meta = load_model("outputs/train/runs/.../checkpoints/best.ckpt")
    >>> meta.concepts.names, meta.max_length
    (['food', 'ambiance', 'service', 'noise'], 128)
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.errors import CheckpointError

CHECKPOINT_KEY = "sparsecbm"
#: The checkpoint metadata format this version writes and reads (``checkpoint["sparsecbm"]["format"]``).
FORMAT_VERSION = 1
#: Scorer state that only matters while training (not needed to predict; not loaded).
TRAINING_ONLY_SUFFIXES = ("mask_movement",)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint stores besides its weights (``checkpoint["sparsecbm"]``).

    Attributes:
        concepts: The concept set (names, values, label) the model was trained on.
        cbm: The flat ``cbm`` options (:class:`~sparsecbm.models.cbm_config.CBMConfig` keys).
        backbone: ``name_or_path``, ``pooling``, ``tokenizer``, ``hf_config`` and ``lora``.
        sparsity: The :class:`~sparsecbm.sparsity.SubnetworkBackbone` settings, or ``None`` for a dense model.
        run_config: The resolved config of the training run (its ``data`` section is the default data).
        head_lr: The concept heads' learning rate (only for rebuilding the training module).
    """

    concepts: ConceptSet
    cbm: dict[str, Any]
    backbone: dict[str, Any]
    sparsity: dict[str, Any] | None = None
    run_config: dict[str, Any] | None = None
    head_lr: float = 1e-3
    format: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # --- the stored form -----------------------------------------------------------------------------
    @classmethod
    def of(cls, model, cbm, run_config: dict[str, Any] | None = None, head_lr: float = 1e-3) -> CheckpointMeta:
        """The metadata of a :class:`~sparsecbm.models.cbm.ConceptBottleneckModel` built with ``cbm``."""
        bb = model.backbone
        return cls(
            concepts=model.concepts,
            cbm=cbm.to_dict() if hasattr(cbm, "to_dict") else dict(cbm),
            backbone={"name_or_path": bb.name_or_path, "pooling": bb.pooling, "tokenizer": bb.tokenizer_name,
                      "hf_config": bb.model.config.to_dict(), "lora": getattr(bb, "lora", None)},
            sparsity=getattr(bb, "settings", None),
            run_config=run_config,
            head_lr=float(head_lr),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``checkpoint["sparsecbm"]`` mapping (the same keys this format always had)."""
        return {"format": self.format, "concepts": self.concepts.to_dict(), "cbm": dict(self.cbm),
                "head_lr": self.head_lr, "run_config": self.run_config, "backbone": dict(self.backbone),
                "sparsity": self.sparsity, **self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "checkpoint") -> CheckpointMeta:
        """From a stored ``checkpoint["sparsecbm"]`` mapping; a :class:`CheckpointError` names a missing key."""
        missing = [k for k in ("concepts", "cbm", "backbone") if k not in d]
        if missing:
            raise CheckpointError(f"{source}: its sparsecbm metadata lacks {missing}; it was not written by "
                                  "`python -m sparsecbm.train` of this format")
        known = ("format", "concepts", "cbm", "head_lr", "run_config", "backbone", "sparsity")
        return cls(concepts=ConceptSet.from_dict(d["concepts"]), cbm=dict(d["cbm"]), backbone=dict(d["backbone"]),
                   sparsity=d.get("sparsity"), run_config=d.get("run_config"), head_lr=float(d.get("head_lr", 1e-3)),
                   format=int(d.get("format", FORMAT_VERSION)), extra={k: v for k, v in d.items() if k not in known})

    # --- what inference reads ------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """The training mode (``cbm.mode``: standard, joint, sequential, independent)."""
        return str(self.cbm.get("mode", "joint"))

    @property
    def data_config(self) -> dict[str, Any] | None:
        """The training run's ``data`` config (what an inference command reads by default)."""
        return (self.run_config or {}).get("data") or None

    @property
    def max_length(self) -> int:
        """The training data's truncation length in tokens."""
        return int((self.data_config or {}).get("max_length", 128))

    @property
    def tokenizer_name(self) -> str:
        return str(self.backbone.get("tokenizer") or self.backbone["name_or_path"])

    @property
    def seed(self) -> int | None:
        return (self.run_config or {}).get("seed")

    def build_model(self):
        """A freshly initialised :class:`~sparsecbm.models.cbm.ConceptBottleneckModel` of this architecture
        (no download: the backbone is built from the stored Hugging Face config)."""
        from sparsecbm.models.backbone import Backbone
        from sparsecbm.models.cbm_config import CBMConfig

        bb = self.backbone
        backbone = Backbone.from_hf_config(bb["hf_config"], bb["pooling"], bb["name_or_path"], bb.get("tokenizer"),
                                           lora=bb.get("lora"))
        if self.sparsity:
            from sparsecbm.sparsity import SubnetworkBackbone

            backbone = SubnetworkBackbone(backbone, len(self.concepts), **self.sparsity)
        return CBMConfig.coerce(self.cbm).build(backbone, self.concepts)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary, or a :class:`CheckpointError` naming what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        hint = " (a folder: pass its checkpoints/best.ckpt)" if path.is_dir() else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}; expected ckpt_path=<run>/checkpoints/best.ckpt "
                              "or last.ckpt written by `python -m sparsecbm.train`")
    size = path.stat().st_size
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except PermissionError:
        raise CheckpointError(f"{path} cannot be read (permission denied); check the file's permissions") from None
    except Exception as e:
        if size == 0 or (zipfile.is_zipfile(path) is False and _looks_like_zip_start(path)):
            raise CheckpointError(
                f"{path} is truncated ({size} bytes; its end is missing): the run was probably killed while "
                "writing it. Use the run's other checkpoint (checkpoints/last.ckpt or best.ckpt) or train again"
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); expected a .ckpt written by "
                              "`python -m sparsecbm.train`") from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"{path} was not written by sparsecbm (no '{CHECKPOINT_KEY}' metadata); expected a "
                              "checkpoint of `python -m sparsecbm.train`")
    version = ckpt[CHECKPOINT_KEY].get("format") if isinstance(ckpt[CHECKPOINT_KEY], Mapping) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, but this sparsecbm reads format {FORMAT_VERSION}; load it "
            "with the sparsecbm version that wrote it, or train again"
        )
    return ckpt


def _looks_like_zip_start(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"  # torch.save's zip container, whose directory (at the end) is gone


def model_state(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights from a Lightning checkpoint's ``state_dict`` (the training module holds the model
    as ``model``), without scorer state that only training reads."""
    return {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
            if k.startswith("model.") and not k.endswith(TRAINING_ONLY_SUFFIXES)}


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)``; a :class:`CheckpointError` naming the keys and shapes that do not
    match (weights from another model than the metadata describes), never a state-dict traceback."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith(TRAINING_ONLY_SUFFIXES))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                    if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{what} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for what, keys in (("missing weights", missing), ("weights the model does not have", unexpected),
                                    ("weights of another shape (stored vs expected)", shapes)) if keys]
        raise CheckpointError(f"{source}: its weights do not match the model its metadata describes; "
                              + "; ".join(parts) + ". The file was probably edited or assembled from two runs; "
                              "use a checkpoint written by `python -m sparsecbm.train`")
    model.load_state_dict(state, strict=False)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model stored in ``path`` on ``device``, in eval mode: ``(model, meta)``.

    The backbone is rebuilt from the Hugging Face config saved in the checkpoint, so no download is
    needed; the tokenizer is loaded (by :class:`~sparsecbm.session.InferenceSession`) from the name or path
    it was trained with. Nothing of the training side (``sparsecbm.lit``, Lightning's Trainer) is used.

    Returns:
        The :class:`~sparsecbm.models.cbm.ConceptBottleneckModel` and its :class:`CheckpointMeta`.
    """
    ckpt = read_checkpoint(path)
    meta = CheckpointMeta.from_dict(ckpt[CHECKPOINT_KEY], str(path))
    model = meta.build_model()
    load_weights(model, model_state(ckpt), str(path))
    return model.to(device).eval(), meta
