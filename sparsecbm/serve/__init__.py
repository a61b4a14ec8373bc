"""The interactive explorer: ``python -m sparsecbm.serve ckpt_path=... [data.root=DIR] [port=8765]``.

:class:`Explorer` is the engine (predictions, cached edits, explanations, subnetworks, the data split);
:func:`create_app` puts the JSON API and the static page on top of it.
"""

from sparsecbm.serve.explorer import Explorer, ExplorerError, Limits

__all__ = ["Explorer", "ExplorerError", "Limits", "create_app"]


def create_app(explorer, compare=None):
    """See :func:`sparsecbm.serve.app.create_app` (imported lazily: FastAPI is only needed to serve)."""
    from sparsecbm.serve.app import create_app as _create_app

    return _create_app(explorer, compare)
