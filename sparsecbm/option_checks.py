"""The option checks that need more than one option, or something outside the config: the pruning window
against the training length, the backbone's blocks and positions (from its config.json), ``set=`` against the
checkpoint's concepts (from its metadata), annotate's output folder against its input, a free port.

:func:`sparsecbm.options.check_options` runs :data:`CROSS_CHECKS` after the per-option checks; each raises a
:class:`~sparsecbm.errors.ConfigError` (or :class:`~sparsecbm.errors.InterventionError`) naming the options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparsecbm.errors import ConfigError, InterventionError


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_MISSING = object()


def _value(cfg: DictConfig, key: str) -> Any:
    """The value at ``key`` (``_MISSING`` when the key or a parent is absent; a mandatory ``???`` is left to
    Hydra's own message)."""
    node: Any = cfg
    for part in key.split("."):
        if not OmegaConf.is_dict(node) or part not in node:
            return _MISSING
        if OmegaConf.is_missing(node, part):
            return _MISSING
        node = node[part]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def path_message(option, value: Any) -> str | None:
    """The message of a bad ``file`` / ``outfile`` / ``path`` / ``dir`` value of ``option`` (an
    :class:`~sparsecbm.options.Option`): what is at the path instead; ``None`` for the other kinds."""
    if option.kind == "file" and value is not None and option.key.endswith("ckpt_path"):
        folder = Path(str(value)).expanduser().is_dir()
        return (f"checkpoint not found: {value}" + (" (a folder: pass its checkpoints/best.ckpt)" if folder else "")
                + f"; expected {option.key}=<run>/checkpoints/best.ckpt written by `python -m sparsecbm.train`")
    if option.kind == "file" and value is not None:
        what = "a folder" if Path(str(value)).expanduser().is_dir() else "not found"
        return f"{option.key}={value}: {what}; expected an existing file" + (f" ({option.help})" if option.help else "")
    if option.kind == "outfile" and value is not None and Path(str(value)).expanduser().is_dir():
        return (f"{option.key}={value} is a folder; expected a file path to write (not a folder), e.g. "
                f"{option.key}={Path(str(value)) / 'table.md'}")
    if option.kind == "path" and value is not None:
        return (f"{option.key}={value}: no such file or folder; expected an existing file or folder"
                + (f" ({option.help})" if option.help else ""))
    if option.kind == "dir" and value is not None:
        what = "a file" if Path(str(value)).expanduser().is_file() else "not found"
        return f"{option.key}={value}: {what}; expected an existing folder" + (f" ({option.help})" if option.help else "")
    return None


def _schedule_inside_training(cfg: DictConfig) -> None:
    """The pruning window must end inside training (unit=epoch: by trainer.max_epochs; fraction: by 1)."""
    sched = _value(cfg, "sparsity.schedule")
    if not isinstance(sched, Mapping) or _value(cfg, "sparsity._target_") is _MISSING:
        return
    unit, start, end = sched.get("unit", "fraction"), float(sched.get("start", 0)), float(sched.get("end", 0))
    if end < start:
        raise ConfigError(f"sparsity.schedule.end={_num(end)} is before sparsity.schedule.start={_num(start)}; "
                          "the pruning window must end after it starts")
    limit = {"fraction": 1.0, "epoch": _value(cfg, "trainer.max_epochs")}.get(unit)
    if isinstance(limit, (int, float)) and end > limit:
        what = "1 (all of training)" if unit == "fraction" else f"trainer.max_epochs={limit}"
        raise ConfigError(f"sparsity.schedule.end={_num(end)} ({unit}) is past the end of training, {what}: the final "
                          f"sparsity would never be reached; lower sparsity.schedule.end or train longer")


def _backbone_fits(cfg: DictConfig) -> None:
    """``sparsity.masked_layers`` inside the backbone's blocks, ``data.max_length`` within its positions
    (from its config.json or ``backbone.config``; no weights are read)."""
    from sparsecbm.backbone_facts import backbone_facts

    facts = backbone_facts(_value(cfg, "backbone"))
    if not facts:
        return
    layers, positions, name = facts.get("layers"), facts.get("positions"), facts["name"]
    masked = _value(cfg, "sparsity.masked_layers")
    if layers and isinstance(masked, list) and _value(cfg, "sparsity._target_") is not _MISSING:
        bad = [i for i in masked if not -layers <= int(i) < layers]
        if bad:
            raise ConfigError(f"sparsity.masked_layers={masked}: {bad} outside the {layers} blocks of backbone "
                              f"'{name}'; expected block indices in {-layers}..{layers - 1} (negative: from the top)")
    length = _value(cfg, "data.max_length")
    if positions and isinstance(length, int) and length > positions:
        raise ConfigError(f"data.max_length={length} is longer than backbone '{name}' reads: it has {positions} "
                          f"positions (max_position_embeddings); pass data.max_length={positions} or less")


def _inference_max_length(cfg: DictConfig) -> None:
    """``data.max_length`` of an inference command within the checkpoint's backbone positions."""
    length = _value(cfg, "data.max_length")
    ckpt = _value(cfg, "ckpt_path")
    if not isinstance(length, int) or ckpt is _MISSING or not Path(str(ckpt)).is_file():
        return
    from sparsecbm.backbone_facts import checkpoint_positions

    positions = checkpoint_positions(ckpt)
    if positions and length > positions:
        raise ConfigError(f"data.max_length={length} is longer than the checkpoint's backbone reads: it has "
                          f"{positions} positions (max_position_embeddings); pass data.max_length={positions} or less")


def _set_has_one_value_per_concept(cfg: DictConfig) -> None:
    """``set='{food: Positive, food: Negative}'``: YAML keeps the last value silently; refuse it."""
    raw = _raw_override("set")
    given = _value(cfg, "set")
    for text in (raw, given if isinstance(given, str) else None):
        dupes = duplicate_keys(text) if text else []
        if dupes:
            raise ConfigError(f"set= gives {len(dupes) + 1 if len(dupes) == 1 else 'several'} values for concept(s) "
                              f"{dupes}; give one value per concept (a soft value is one list: "
                              "{food: [0.2, 0.8, 0.0]})")


def duplicate_keys(text: str) -> list[str]:
    """Keys given twice in a YAML/Hydra mapping text (``{food: Positive, food: Negative}`` -> ``['food']``);
    ``[]`` when there are none or the text is not a mapping (its own parser reports that)."""
    import yaml

    dupes: list[str] = []

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dupes.extend(sorted({str(k) for k in keys if keys.count(k) > 1} - set(dupes)))
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return []
    return dupes


def _set_names_known_values(cfg: DictConfig) -> None:
    """``set=`` against the checkpoint's concepts (read from its metadata, weights not loaded): an unknown
    concept or value is reported before the model loads."""
    spec, ckpt = _value(cfg, "set"), _value(cfg, "ckpt_path")
    if spec in (None, _MISSING) or ckpt is _MISSING or not Path(str(ckpt)).is_file():
        return
    from sparsecbm.backbone_facts import checkpoint_meta

    meta = checkpoint_meta(ckpt)
    if not meta or not isinstance(meta.get("concepts"), Mapping):
        return
    from sparsecbm.concepts import ConceptSet

    try:
        concepts = ConceptSet.from_dict(meta["concepts"])
    except Exception:  # another format: the command's own loading reports it
        return
    if isinstance(spec, str):
        import yaml

        try:
            spec = yaml.safe_load(spec) if spec.strip() else {}
        except yaml.YAMLError:
            return  # the intervention's own parser reports malformed YAML
    if not isinstance(spec, Mapping):
        return
    # names and hard values here (the messages of sparsecbm.interpret.intervention.parse_set, which checks the
    # rest, e.g. soft probabilities, once the model is loaded)
    for name, value in spec.items():
        if str(name) not in concepts.names:
            raise InterventionError(f"unknown concept '{name}'; valid concepts: {concepts.names}")
        c = concepts[str(name)]
        if isinstance(value, str):
            try:
                c.index(value)
            except KeyError:
                raise InterventionError(f"unknown value '{value}' for concept '{name}'; valid values of '{name}': "
                                        f"{list(c.values)}") from None


def _raw_override(key: str) -> str | None:
    """The text after ``key=`` on the command line (Hydra's record of it), or ``None``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        task = HydraConfig.get().overrides.task
    except Exception:  # pragma: no cover - outside a Hydra job
        return None
    for item in task:
        name, _, value = str(item).partition("=")
        if name.lstrip("+~") == key:
            return value
    return None


def _annotate_keeps_its_input(cfg: DictConfig) -> None:
    """``out_dir`` must not be the folder it reads (it would rewrite the input CSVs in place)."""
    out = _value(cfg, "out_dir")
    root = _value(cfg, "data.root")
    if root in (None, _MISSING):
        root = _value(cfg, "data.default_root")
    if out in (None, _MISSING) or root in (None, _MISSING):
        return
    if Path(str(out)).expanduser().resolve() == Path(str(root)).expanduser().resolve():
        raise ConfigError(f"out_dir={out} is the folder annotate reads (data.root={root}): it would overwrite "
                          "its input files; pass another out_dir=DIR")


def _serve_port_free(cfg: DictConfig) -> None:
    """The port is checked by binding it (then released): a busy port is an error before any model loads."""
    import socket

    host, port = _value(cfg, "host"), _value(cfg, "port")
    if not isinstance(port, int) or host is _MISSING:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(str(host), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"host={host!r} cannot be resolved ({e}); e.g. host=127.0.0.1") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pick another port=...") from None


#: config name -> checks that need more than one option (run after the per-option checks)
CROSS_CHECKS: dict[str, tuple[Callable[[DictConfig], None], ...]] = {
    "train": (_schedule_inside_training, _backbone_fits),
    "intervene": (_set_has_one_value_per_concept, _set_names_known_values, _inference_max_length),
    "explain": (_inference_max_length,),
    "evaluate": (_inference_max_length,),
    "label_refit": (_inference_max_length,),
    "annotate": (_annotate_keeps_its_input,),
    "serve": (_serve_port_free,),
}
