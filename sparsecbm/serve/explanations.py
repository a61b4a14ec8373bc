"""The explorer's explanations: token attributions per concept for one text, and their export as the
explain command writes them (``explanations.json`` / ``report.html``).

Mixed into :class:`~sparsecbm.serve.explorer.Explorer` (it reads the explorer's session and lock).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from sparsecbm.serve.core import ExplorerError


class Explanations:
    """:meth:`explain` and :meth:`export`."""

    def explain(self, method: str = "ours", text: Any = None, example: Any = None,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Token attributions per concept (``method``, see :mod:`sparsecbm.interpret.attribution`), with their cost."""
        from sparsecbm.interpret.attribution import METHODS, resolve_name
        from sparsecbm.interpret.explainer import explain_batch

        if method not in METHODS:
            raise ExplorerError(f"unknown attribution method {method!r}; valid methods: {list(METHODS)}")
        text, truth = self.resolve(text, example)
        with self.lock:
            enc = self.encode(text)
            start = time.perf_counter()
            try:
                e = explain_batch(self.session, dict(enc.batch), method, [text], **(options or {}))[0]
                name = resolve_name(method, self.model)
            except (ValueError, KeyError) as err:
                raise ExplorerError(f"method {method!r} does not apply to this model: {err}") from None
            seconds = time.perf_counter() - start
        if truth is not None:
            e.true_label = truth["label"]
            for c in e.concepts:
                c.true = truth["concepts"].get(c.name)
        return {"method": name, "seconds": seconds, "explanation": asdict(e)}

    def export(self, fmt: str = "json", method: str = "ours", text: Any = None, example: Any = None) -> str:
        """The current text as the explain command writes it: ``explanations.json`` or ``report.html``."""
        import json

        from sparsecbm.interpret.explainer import explanation_set
        from sparsecbm.interpret.explanation import Explanation
        from sparsecbm.interpret.html_report import render_html

        if fmt not in ("json", "html"):
            raise ExplorerError(f"unknown export format {fmt!r}; expected 'json' or 'html'")
        res = self.explain(method, text, example)
        with self.lock:
            es = explanation_set(self.session, [Explanation.from_dict(res["explanation"])], res["method"],
                                 meta={"source": "sparsecbm.serve", "seconds": res["seconds"]})
        return json.dumps(es.to_dict(), indent=1) if fmt == "json" else render_html(es)
