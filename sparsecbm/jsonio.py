"""Atomic JSON files: every JSON a run writes (results, curves, interventions, benchmarks) goes through here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sparsecbm.outputs import write_text


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Atomic JSON write (tmp file + fsync + rename); a failed write is an
    :class:`~sparsecbm.errors.OutputError` and leaves ``path`` as it was (:func:`sparsecbm.outputs.atomic_write`)."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str))
