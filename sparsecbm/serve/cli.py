"""``python -m sparsecbm.serve ckpt_path=... [data.root=DIR] [port=8765] [host=127.0.0.1] [compare_ckpt_path=...]``.

Loads the checkpoint(s) and the data once, binds ``host:port``, prints the URL and serves until Ctrl+C.
A user error (missing or unreadable checkpoint, bad data root, port in use) prints one line and exits 2.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from sparsecbm.config import check_split, hydra_entry_point
from sparsecbm.errors import ConfigError, DataError
from sparsecbm.serve.explorer import Explorer, Limits

log = logging.getLogger(__name__)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SPLITS = ("train", "dev", "test")


class ServeError(ConfigError):
    """A user error at start-up (exit code 2)."""


def build(cfg: DictConfig) -> tuple[Explorer, Explorer | None]:
    """The explorer of ``ckpt_path`` (with its data) and of ``compare_ckpt_path`` (or ``None``)."""
    from sparsecbm.session import InferenceSession, session_from_cfg

    try:
        cfg.ckpt_path  # noqa: B018  (a missing ??? value raises here, with the message below)
    except MissingMandatoryValue:
        raise ServeError("ckpt_path=... is required: the checkpoint to explore, e.g. "
                         "ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt") from None
    check_split(cfg.split)
    limits = Limits(**OmegaConf.to_container(cfg.limits, resolve=True))
    session = session_from_cfg(cfg)
    dm = None
    try:
        dm = session.datamodule(cfg.paths.cache_dir + "/tokenized")
    except (DataError, ValueError, OSError) as e:
        if session.data_explicit:
            root = (cfg.get("data") or {}).get("root")
            raise ServeError(f"data{'.root=' + str(root) if root else ''}: {e}") from None
        log.warning("no data views (examples, dataset, curves): the checkpoint's data could not be loaded (%s); "
                    "pass data.root=DIR", e)
    options = {"split": cfg.split, "limits": limits, "eps": float(cfg.logit_eps),
               "mask_portion": float(cfg.mask_portion), "random_seeds": int(cfg.random_seeds)}
    explorer = Explorer(session, dm, **options)
    compare = None
    if cfg.get("compare_ckpt_path"):
        other = InferenceSession.load(cfg.compare_ckpt_path, session.device)
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
    # Ctrl+C: open connections (a browser keeps some alive) get 1 s, not uvicorn's wait for all of them
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1))
    print(f"sparsecbm explorer: {url(host, cfg.port)}  (Ctrl+C to stop)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled: the stop the user asked for
        pass
    finally:
        sock.close()
    print("sparsecbm explorer: stopped", flush=True)


def leave() -> None:
    """End the process now that the server has stopped. A request or the Dataset pass may still be inside
    the model, in native code Python cannot interrupt: waiting for it could take minutes, and tearing the
    interpreter down around it aborts the process. Logs and output are flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@hydra_entry_point("serve")
def _serve(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """``python -m sparsecbm.serve`` / ``sparsecbm-serve``: serve until Ctrl+C, then exit at once (status 0)."""
    _serve()
    leave()
