"""The Hugging Face hub as a data source: reachability (one short request), the offline cache, and the
one paragraph a user without network gets.

Part of :mod:`sparsecbm.data.loading` (which re-exports these names).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sparsecbm.errors import DataError


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0", "false") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_unreachable_message(name: str, reason: str) -> str:
    """The one paragraph a user without network gets (names the commands that fix it)."""
    return (
        f"cannot load the data set '{name}' from the Hugging Face hub: {reason}. Without network, point the "
        "command at local files: data.root=DIR (a folder with train.csv, dev.csv and test.csv). For CEBaB, the "
        "repository ships its human-annotated columns in data/cebab/: restore the folder with "
        "`git checkout -- data/cebab`, or run `python data/prepare_cebab.py` once on a machine with network "
        "and copy its data/cebab folder here (see data/README.md)."
    )


def no_source_message(data_cfg: Mapping[str, Any]) -> str:
    """A data config with no ``root``, no existing ``default_root`` and no hub copy: what to pass."""
    name, files = data_cfg.get("name") or "this data config", (data_cfg.get("files") or {}).values()
    default = data_cfg.get("default_root")
    where = f"its default folder {default} does not exist" if default else "it has no default folder"
    return (f"no data source for data '{name}': data.root is not set, {where} and it has no Hugging Face hub "
            f"copy; pass data.root=DIR, a folder with {sorted(files) or 'train/dev/test files'}")


def hub_reachable(timeout: float = 3.0) -> str | None:
    """``None`` when the hub answers one request within ``timeout`` seconds, else why not (no retries)."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint + "/api/datasets?limit=1", method="HEAD"),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the hub answered (an HTTP status is an answer)
    except (OSError, ValueError) as e:
        return f"{endpoint} is not reachable ({getattr(e, 'reason', e)})"
    return None


def _hub_cached(name: str) -> bool:
    """Whether a hub data set has local copies (hub or datasets cache) to read offline; no network, no import."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    ds = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")).expanduser()
    org, _, repo = name.rpartition("/")
    if (hub / f"datasets--{org}--{repo}".replace("/", "--")).is_dir():
        return True
    return ds.is_dir() and any(p.name.startswith(f"{org}___" if org else repo) for p in ds.iterdir())


def preflight(data_cfg: Mapping[str, Any]) -> None:
    """Check, before any model is loaded, that the data source a data config names can be reached.

    Follows :func:`load_splits`' source order (``root``, ``default_root``, the hub): a ``root`` that is not a
    folder, or a hub that is offline with no local copy or unreachable (one request), raises the same
    :class:`DataError` loading would, in about a second rather than after importing torch.
    """
    root, default_root, hub = data_cfg.get("root"), data_cfg.get("default_root"), data_cfg.get("hub")
    if root is not None:
        if not Path(str(root)).expanduser().is_dir():
            raise DataError(f"data.root '{root}' is not a folder; expected a folder with "
                            f"{sorted((data_cfg.get('files') or {}).values()) or 'train/dev/test files'}")
        return
    if default_root is not None and Path(str(default_root)).is_dir():
        return
    if not hub or not hub.get("name"):
        raise DataError(no_source_message(data_cfg))
    if _offline():
        if not _hub_cached(str(hub["name"])):
            raise DataError(hub_unreachable_message(
                str(hub["name"]), "HF_HUB_OFFLINE is set and it is not in the local cache"))
        return
    reason = hub_reachable()
    if reason is not None:
        raise DataError(hub_unreachable_message(str(hub["name"]), reason))


def _read_hub(name: str, split: str) -> tuple[list[str], list[dict[str, Any]]]:
    """One split from the hub. Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) only the local cache
    is tried; online, one request with a short timeout first, so no network fails fast, not after retries."""
    import datasets

    if not _offline():
        reason = hub_reachable()
        if reason is not None:
            raise DataError(hub_unreachable_message(name, reason))
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        reason = ("HF_HUB_OFFLINE is set and it is not in the local cache" if _offline()
                  else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise DataError(hub_unreachable_message(f"{name}[{split}]", reason)) from None
    return list(ds.column_names), ds.to_list()

