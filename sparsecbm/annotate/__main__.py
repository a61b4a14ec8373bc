"""``python -m sparsecbm.annotate data.root=DIR [data=...] bank=NAME|PATH out_dir=DIR [annotator=llm
backbone.name_or_path=...] [discover=true]``: machine concept annotation of a data folder (see
:mod:`sparsecbm.annotate`)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparsecbm.config import hydra_entry_point
from sparsecbm.errors import ConfigError

log = logging.getLogger(__name__)


def _data_fields(cfg: DictConfig) -> tuple[Path, str, dict[str, Any], list, dict[str, str]]:
    """(root, text column, label, human concept specs, files) from the ``data`` group."""
    from sparsecbm.concepts import ConceptSet
    from sparsecbm.data.loading import DataError

    data = cfg.data
    root = OmegaConf.select(data, "root", default=None) or OmegaConf.select(data, "default_root", default=None)
    if not root:
        raise DataError("annotate needs data.root=DIR: a folder with train/dev/test files")
    label = OmegaConf.to_container(data.label, resolve=True)
    concepts = OmegaConf.select(data, "concepts", default=None, throw_on_missing=False)
    concepts = [] if concepts is None or OmegaConf.is_missing(data, "concepts") else OmegaConf.to_container(concepts)
    if OmegaConf.is_missing(data.label, "values"):
        raise DataError("data.label.values is not set; pass the label classes, e.g. 'data.label.values=[neg,pos]'")
    cs = ConceptSet.from_config(concepts, label, list(data.get("concept_values") or ["Negative", "Positive", "unknown"]),
                                dict(data.get("concept_aliases") or {}))
    human = list(cs.concepts)
    if data.get("missing_concept") == "unknown":  # an empty human cell means unknown: concepts.yaml says so
        human = [replace(h, aliases={**h.aliases, "": "unknown"}) if "unknown" in h.values else h for h in human]
    files = dict(data.get("files") or {})
    return Path(str(root)), str(data.text_column), label, human, files


def run(cfg: DictConfig):
    from rich.console import Console

    from sparsecbm.annotate.annotator import annotate_folder, check_split
    from sparsecbm.annotate.bank import load_bank
    from sparsecbm.annotate.embed import SentenceEmbedder

    check_split("calibration_split", str(cfg.calibration_split))  # before any model loads: refused in a second
    if cfg.discover:
        check_split("discovery.split", str(cfg.discovery.split))
    bank = load_bank(cfg.bank)
    root, text_column, label, human, files = _data_fields(cfg)
    out = Path(cfg.out_dir)
    e = cfg.embedding
    embedder = SentenceEmbedder(e.model, e.batch_size, e.max_length, e.cache_dir, e.device)
    if cfg.annotator == "llm":
        from sparsecbm.annotate.llm import PROMPT, annotate_folder_llm

        if not cfg.backbone.name_or_path:
            raise ConfigError("annotator=llm needs backbone.name_or_path=NAME_OR_DIR: a Hugging Face causal LM")
        llm = OmegaConf.to_container(cfg.llm, resolve=True)
        prompt = llm.pop("prompt") or PROMPT
        result = annotate_folder_llm(root, bank, out, text_column, label, human, files or None, prompt=prompt,
                                     model=str(cfg.backbone.name_or_path), dtype=cfg.backbone.dtype, **llm)
    elif cfg.annotator == "embedding":
        result = annotate_folder(root, bank, out, text_column, label, human, files or None, embedder,
                                 cfg.calibration, cfg.calibration_split, cfg.default_tau, cfg.language)
    else:
        raise ConfigError(f"annotator='{cfg.annotator}' is not valid; expected embedding or llm")
    console = Console()
    console.print(result.table())
    log.info("wrote %s (train/dev/test.csv, concepts.yaml, annotation.json)", out)
    if cfg.discover:
        from sparsecbm.annotate.discover import discover

        report = discover(out, bank, embedder, **OmegaConf.to_container(cfg.discovery, resolve=True),
                          language=cfg.language, seed=cfg.seed)
        console.print(report.table())
        if report.embedding_bound:
            console.print(f"label read linearly from the text embedding alone ({report.split}): macro-F1 "
                          f"{100 * report.embedding_bound['f1']:.1f}; every data concept: "
                          f"{100 * report.all_data_concepts['f1']:.1f}")
        log.info("wrote %s (bank.yaml, ranking.csv, ranking.md)", out / "discovery")
    return result


@hydra_entry_point("annotate")
def main(cfg: DictConfig) -> None:
    run(cfg)  # user errors (DataError, ConfigError, BankError, a missing ???) exit with status 2


if __name__ == "__main__":
    main()
