"""``python -m sparsecbm.serve ckpt_path=... [data.root=DIR] [port=8765] [host=127.0.0.1] [compare_ckpt_path=...]``.

Loads the checkpoint(s) and the data once, binds ``host:port``, prints the URL and serves until Ctrl+C.
A user error (missing or unreadable checkpoint, bad data root, port in use) prints one line and exits 2.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from sparsecbm.checkpoint import InferenceSession
from sparsecbm.config import (
    check_split,
    hydra_entry_point,
    resolve_device,
)
from sparsecbm.errors import ConfigError, DataError
from sparsecbm.serve.explorer import Explorer, Limits

log = logging.getLogger(__name__)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SPLITS = ("train", "dev", "test")


class ServeError(ConfigError):
    """A user error at start-up (exit code 2)."""


def _data_cfg(cfg: DictConfig, session: InferenceSession) -> tuple[DictConfig | None, str | None, bool]:
    """(data config or None for the checkpoint's own, data root, whether the user asked for data explicitly)."""
    data = cfg.get("data") or {}
    root = data.get("root")
    if "_target_" not in data:
        return None, root, root is not None
    with open_dict(cfg):  # data configs read the tokenizer from the backbone group
        cfg.backbone = {"tokenizer": session.module.model.backbone.tokenizer_name}
    return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True)), root, True


def build(cfg: DictConfig) -> tuple[Explorer, Explorer | None]:
    """The explorer of ``ckpt_path`` (with its data) and of ``compare_ckpt_path`` (or ``None``)."""
    try:
        ckpt_path = cfg.ckpt_path
    except MissingMandatoryValue:
        raise ServeError("ckpt_path=... is required: the checkpoint to explore, e.g. "
                         "ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt") from None
    check_split(cfg.split)
    limits = Limits(**OmegaConf.to_container(cfg.limits, resolve=True))
    device = resolve_device(cfg.accelerator)
    session = InferenceSession.load(ckpt_path, map_location=device)
    data_cfg, root, explicit = _data_cfg(cfg, session)
    session.data_cfg = data_cfg if data_cfg is not None else ({"root": root} if root else None)
    dm = None
    try:
        dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    except (DataError, ValueError, OSError) as e:
        if explicit:
            raise ServeError(f"data{'.root=' + str(root) if root else ''}: {e}") from None
        log.warning("no data views (examples, dataset, curves): the checkpoint's data could not be loaded (%s); "
                    "pass data.root=DIR", e)
    options = {"split": cfg.split, "limits": limits, "eps": float(cfg.logit_eps),
               "mask_portion": float(cfg.mask_portion), "random_seeds": int(cfg.random_seeds)}
    explorer = Explorer(session, dm, **options)
    compare = None
    if cfg.get("compare_ckpt_path"):
        other = InferenceSession.load(cfg.compare_ckpt_path, map_location=device)
        compare = Explorer(other, None, **options)
    return explorer, compare


def bind(host: str, port: Any) -> socket.socket:
    """A listening socket on ``host:port`` (so a port in use is a clear start-up error, not a log line)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ServeError(f"port={port!r} is not valid; expected an integer in 1..65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ServeError(f"host={host!r} cannot be resolved ({e}); e.g. host=127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror}); pick another port=...") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def host_warning(host: str) -> str | None:
    """The warning printed when ``host`` is not this machine only."""
    if host in LOCAL_HOSTS:
        return None
    return (f"warning: host={host} makes the explorer reachable from other machines; it has no authentication "
            "and anyone who reaches it can run the model (the default host=127.0.0.1 is this machine only)")


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(cfg: DictConfig) -> None:
    """Build, bind, print the URL, serve (blocks)."""
    import uvicorn

    from sparsecbm.serve.app import create_app

    explorer, compare = build(cfg)
    host = str(cfg.host)
    sock = bind(host, cfg.port)
    if host_warning(host):
        print(host_warning(host), file=sys.stderr, flush=True)
    app = create_app(explorer, compare)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    print(f"sparsecbm explorer: {url(host, cfg.port)}  (Ctrl+C to stop)", flush=True)
    server.run(sockets=[sock])


@hydra_entry_point("serve")
def main(cfg: DictConfig) -> None:
    run(cfg)
