"""``python -m sparsecbm.annotate data.root=DIR [data=...] bank=NAME|PATH out_dir=DIR``: machine concept annotation of a data folder (see :mod:`sparsecbm.annotate`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from sparsecbm.config import CONF_DIR, quiet_libraries, register_resolvers

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
    files = dict(data.get("files") or {})
    return Path(str(root)), str(data.text_column), label, list(cs.concepts), files


def run(cfg: DictConfig):
    from rich.console import Console

    from sparsecbm.annotate.annotator import annotate_folder
    from sparsecbm.annotate.bank import load_bank

    bank = load_bank(cfg.bank)
    root, text_column, label, human, files = _data_fields(cfg)
    out = Path(cfg.out_dir)
    from sparsecbm.annotate.embed import SentenceEmbedder

    e = cfg.embedding
    embedder = SentenceEmbedder(e.model, e.batch_size, e.max_length, e.cache_dir, e.device)
    result = annotate_folder(root, bank, out, text_column, label, human, files or None, embedder,
                             cfg.calibration, cfg.calibration_split, cfg.default_tau, cfg.language)
    Console().print(result.table())
    log.info("wrote %s (train/dev/test.csv, concepts.yaml, annotation.json)", out)
    return result


register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="annotate")
def main(cfg: DictConfig) -> None:
    from omegaconf.errors import MissingMandatoryValue

    from sparsecbm.annotate.bank import BankError
    from sparsecbm.data.loading import DataError

    quiet_libraries()
    try:
        run(cfg)
    except (DataError, BankError, MissingMandatoryValue, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
