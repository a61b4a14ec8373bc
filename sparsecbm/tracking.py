"""Experiment tracking beyond Lightning's scalar logging: run summaries, tables and figures for wandb.

Lightning already sends every logged metric (``train/loss``, ``val/label/f1``,
``val/concept/<name>/acc`` per concept...) and the config (:func:`sparsecbm.train.build`) to each
logger. At the end of a run :func:`log_run_outputs` adds, for a ``WandbLogger``: the final
val/test metrics as the run summary, the subnetwork report (``subnetworks.csv``) as a table, and
every PNG figure of the run folder as an image; then it finishes the wandb run, so the next run
of a sweep starts its own.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparsecbm.run_result import RunResult

SUMMARY_SECTIONS = ("val", "test", "run", "model")


def flat_metrics(results: RunResult | Mapping[str, Any], sections: Sequence[str] = SUMMARY_SECTIONS) -> dict[str, float]:
    """Numbers of a run result (or its ``results.json`` mapping) as ``section/a/b`` keys
    (``test/per_concept/food/acc``...)."""
    from sparsecbm.run_result import SECTIONS, RunResult

    result = RunResult.coerce(results)
    out: dict[str, float] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{key}/{k}")
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[key] = float(node)

    for section in sections:
        node = getattr(result, section, None) if section in SECTIONS else result.extra.get(section)
        if node is not None:
            walk(node, section)
    return out


def log_run_outputs(loggers: Sequence[Any], results: RunResult | Mapping[str, Any], output_dir: str | Path) -> None:
    """Send the run's final metrics, subnetwork table and figures to every wandb logger, then finish it."""
    from lightning.pytorch.loggers import WandbLogger

    output_dir = Path(output_dir)
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        run.summary.update(flat_metrics(results))
        table = output_dir / "subnetworks.csv"
        if table.is_file():
            with table.open(newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                logger.log_table(key="subnetworks", columns=rows[0], data=rows[1:])
        for png in sorted(output_dir.glob("*.png")):
            logger.log_image(key=f"figures/{png.stem}", images=[str(png)])
        run.finish()


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """What an offline wandb run recorded (``<save_dir>/wandb/offline-run-*``), without network or sync.

    Returns ``{"history": {key: last value}, "summary": {...}, "config": {...}, "finished": bool}`` (values
    JSON-decoded; ``finished``: the run's exit record is written — wandb's service writes asynchronously).
    The ``run-*.wandb`` file is a LevelDB-style log (32 KiB blocks of checksummed chunks) of protobuf records.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    path = next(Path(run_dir).glob("run-*.wandb"))
    data = path.read_bytes()
    out: dict[str, Any] = {"history": {}, "summary": {}, "config": {}, "finished": False}
    pos, block, buf = 7, 32768, b""  # 7-byte file header (":W&B" + version)
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind not in (1, 4):  # FULL or LAST chunk ends a record
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        kind_name = record.WhichOneof("record_type")
        out["finished"] |= kind_name == "exit"
        items = {"history": lambda r: r.history.item, "summary": lambda r: r.summary.update,
                 "config": lambda r: r.config.update}.get(kind_name)
        for item in items(record) if items else ():
            out[kind_name][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
