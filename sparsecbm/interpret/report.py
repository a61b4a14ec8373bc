"""Self-contained HTML report (inline CSS, no scripts or network) and matplotlib PNGs for papers."""

from __future__ import annotations

import html
from pathlib import Path

from sparsecbm.interpret.explanation import Explanation, ExplanationSet

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1em;margin:.8em 0 .3em}
.tok{padding:1px 2px;margin:1px;border-radius:3px;display:inline-block;font-family:monospace}
.row{display:flex;align-items:center;gap:.5em;margin:2px 0}.name{width:9em;font-weight:600}
.bar{height:12px;background:#4477aa;display:inline-block}.neg{background:#cc6677}
.track{width:240px;background:#eee;display:inline-block}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
.muted{color:#888}.example{border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}
.levels td{width:3em;text-align:center}.levels td.pred{outline:2px solid #222}
"""


def _esc(x) -> str:
    return html.escape(str(x))


def token_heatmap(tokens: list[str], scores: list[float], concept: str) -> str:
    """One concept's tokens coloured by score (blue: supports the predicted value, red: against)."""
    peak = max((abs(s) for s in scores), default=0.0) or 1.0
    spans = []
    for tok, s in zip(tokens, scores):
        a = min(abs(s) / peak, 1.0)
        rgb = "68,119,170" if s >= 0 else "204,102,119"
        spans.append(
            f'<span class="tok" title="{s:.4f}" style="background:rgba({rgb},{a:.2f})">{_esc(tok)}</span>'
        )
    return f'<div class="heatmap" data-concept="{_esc(concept)}">{"".join(spans)}</div>'


def _bar_row(name: str, value: float, scale: float, text: str) -> str:
    width = int(240 * min(abs(value) / (scale or 1.0), 1.0))
    cls = "bar" + (" neg" if value < 0 else "")
    return (
        f'<div class="row"><span class="name">{_esc(name)}</span><span class="track">'
        f'<span class="{cls}" style="width:{width}px"></span></span><span>{_esc(text)}</span></div>'
    )


def subnetwork_heatmap(subnetwork: dict | None) -> str:
    """``subnetwork["density"]`` (concept -> layer -> kept fraction) as a coloured table, or a note."""
    if not subnetwork or not subnetwork.get("density"):
        return '<p class="muted subnetwork">No per-concept weight masks in this model (subnetwork: null).</p>'
    density = subnetwork["density"]
    layers = sorted({layer for d in density.values() for layer in d})
    head = "".join(f"<th>{_esc(layer)}</th>" for layer in layers)
    rows = []
    for concept, d in density.items():
        cells = "".join(
            f'<td style="background:rgba(68,119,170,{d.get(layer, 0):.2f})">{d.get(layer, 0):.2f}</td>'
            for layer in layers
        )
        rows.append(f"<tr><th>{_esc(concept)}</th>{cells}</tr>")
    return f'<table class="subnetwork"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def cross_mask_table(subnetwork: dict | None) -> str:
    """The training run's cross-mask matrix (concept i's macro-F1 under concept j's mask) and specificity."""
    if not subnetwork or not subnetwork.get("cross_mask"):
        return ""
    names, m, spec = list(subnetwork["density"]), subnetwork["cross_mask"], subnetwork.get("specificity") or {}
    head = "".join(f"<th>mask {_esc(c)}</th>" for c in names) + "<th>specificity</th>"
    rows = [f"<tr><th>{_esc(c)}</th>" + "".join(
        f'<td style="background:rgba(68,119,170,{v:.2f}){";font-weight:700" if i == j else ""}">{100 * v:.1f}</td>'
        for j, v in enumerate(m[i])) + f"<td>{100 * spec.get(c, 0.0):+.1f}</td></tr>" for i, c in enumerate(names)]
    return ("<h3>Cross-mask test macro-F1 (row: concept, column: whose mask runs)</h3>"
            f'<table class="cross-mask"><tr><th></th>{head}</tr>{"".join(rows)}</table>')


def _concept_value(c) -> str:
    """``food=Positive (0.91, true Negative)``; a graded concept as a level: ``level 4 of 5 ('4', 0.62;
    expected 3.8; true level 3)``."""
    true_level = c.level(c.true) if c.true is not None else None
    if c.levels and c.level() is not None:
        expected = c.expected_level()
        true = (f"; true level {true_level}" if true_level is not None else
                f"; true {_esc(c.true)}" if c.true is not None else "")
        return (f"level {c.level()} of {len(c.levels)} ('{_esc(c.predicted)}', {max(c.probs):.2f}; "
                f"expected {expected:.1f}{true})")
    true = f", true {_esc(c.true)}" if c.true is not None else ""
    if c.levels and true_level is not None:
        true = f", true level {true_level} of {len(c.levels)}"
    return f"{_esc(c.predicted)} ({max(c.probs):.2f}{true})"


def level_strip(c) -> str:
    """A graded concept's distribution as one row of cells, levels low to high, then the unordered values;
    the predicted cell outlined."""
    order = list(c.levels) + [v for v in c.values if v not in c.levels]
    cells = []
    for v in order:
        p = c.probs[c.values.index(v)]
        label = f"{c.levels.index(v) + 1}" if v in c.levels else _esc(v)
        cls = ' class="pred"' if v == c.predicted else ""
        cells.append(f'<td{cls} title="{_esc(v)}: {p:.2f}" style="background:rgba(68,119,170,{p:.2f})">'
                     f"{label}<br>{p:.2f}</td>")
    return (f'<div class="row"><span class="name">{_esc(c.name)}</span>'
            f'<table class="levels" data-concept="{_esc(c.name)}"><tr>{"".join(cells)}</tr></table></div>')


def example_html(i: int, e: Explanation) -> str:
    parts = [
        f'<div class="example" id="ex{i}"><h2>Example {i}: predicted {_esc(e.predicted_label)}'
        + (f' <span class="muted">(true {_esc(e.true_label)})</span>' if e.true_label is not None else "")
        + f"</h2><p>{_esc(e.text)}</p><h3>Tokens per concept</h3>"
    ]
    for c in e.concepts:
        parts.append(f'<div class="row"><span class="name">{_esc(c.name)}</span><span>{_concept_value(c)}</span></div>')
        parts.append(token_heatmap(e.tokens, c.token_scores, c.name))
    parts.append("<h3>Concept probabilities</h3>")
    for c in e.concepts:
        if c.levels:  # graded: levels in order (low to high), then the values outside the order
            parts.append(level_strip(c))
            continue
        for v, p in zip(c.values, c.probs):
            parts.append(_bar_row(f"{c.name}={v}", p, 1.0, f"{p:.2f}"))
    if e.contributions:
        scale = max(abs(v) for v in e.contributions.values()) or 1.0
        parts.append(f"<h3>Contributions to the logit of label {_esc(e.predicted_label)}</h3>")
        for name, v in e.contributions.items():
            parts.append(_bar_row(name, v, scale, f"{v:+.3f}"))
        if e.label_bias is not None:
            parts.append(f'<p class="muted">bias {e.label_bias:+.3f}</p>')
    parts.append("<h3>Label probabilities</h3>")
    for v, p in zip(e.label_values, e.label_probs):
        parts.append(_bar_row(v, p, 1.0, f"{p:.2f}"))
    parts.append("<h3>Subnetwork</h3>" + subnetwork_heatmap(e.subnetwork) + "</div>")
    return "\n".join(parts)


def label_layer_html(es: ExplanationSet) -> str:
    if not es.label_layer:
        return '<p class="muted">The label head is not linear: no per-label concept weights.</p>'
    rows = []
    for label, used in es.label_layer.items():
        cells = "; ".join(
            f"{_esc(c.concept)} (" + ", ".join(f"{_esc(v)} {w:+.2f}" for v, w in c.weights.items()) + ")"
            for c in used
        )
        rows.append(f"<tr><th>{_esc(label)}</th><td style='text-align:left'>{cells}</td></tr>")
    return f"<table class='label-layer'><tr><th>label</th><th>concepts used (value weights)</th></tr>{''.join(rows)}</table>"


def render_html(es: ExplanationSet, faithfulness_md: str | None = None) -> str:
    """The whole report as one HTML string (opens offline: no external resources)."""
    head = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>sparsecbm explanations</title>"
        f"<style>{CSS}</style></head><body><h1>sparsecbm explanations</h1>"
        f"<p>method: <b>{_esc(es.method)}</b>; checkpoint: {_esc(es.checkpoint)}; "
        f"label sparsity: {_esc(es.label_sparsity)}; token gates: {_esc(es.token_gates)}</p>"
    )
    body = [
        head,
        "<h2>Label layer</h2>",
        label_layer_html(es),
        "<h2>Subnetwork (model)</h2>",
        subnetwork_heatmap(es.subnetwork),
        cross_mask_table(es.subnetwork),
    ]
    if faithfulness_md:
        body.append(f"<h2>Faithfulness</h2><pre>{_esc(faithfulness_md)}</pre>")
    body += [example_html(i, e) for i, e in enumerate(es.explanations)]
    return "\n".join(body) + "</body></html>"


def write_report(es: ExplanationSet, path: str | Path, faithfulness_md: str | None = None) -> Path:
    path = Path(path)
    path.write_text(render_html(es, faithfulness_md), encoding="utf-8")
    return path


def write_pngs(es: ExplanationSet, out_dir: str | Path, max_examples: int = 3) -> list[Path]:
    """Token heatmaps (concepts x tokens) for the first examples and the label-layer weights, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir, paths = Path(out_dir), []
    for i, e in enumerate(es.explanations[:max_examples]):
        m = np.array([c.token_scores for c in e.concepts])
        peak = np.abs(m).max(axis=1, keepdims=True)
        m = m / np.where(peak == 0, 1, peak)
        fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(e.tokens)), 0.5 * len(e.concepts) + 1.2))
        ax.imshow(m, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(e.tokens)), e.tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(e.concepts)), [f"{c.name}={c.predicted}" for c in e.concepts], fontsize=8)
        ax.set_title(f"example {i}: predicted {e.predicted_label} ({es.method})", fontsize=9)
        fig.tight_layout()
        paths.append(out_dir / f"tokens_{i}.png")
        fig.savefig(paths[-1], dpi=150)
        plt.close(fig)
    if es.label_layer:
        labels = list(es.label_layer)
        cols = sorted({(c.concept, v) for used in es.label_layer.values() for c in used for v in c.weights})
        w = np.zeros((len(labels), len(cols)))
        for r, label in enumerate(labels):
            for c in es.label_layer[label]:
                for v, x in c.weights.items():
                    w[r, cols.index((c.concept, v))] = x
        fig, ax = plt.subplots(figsize=(0.5 * len(cols) + 2, 0.4 * len(labels) + 1.5))
        peak = np.abs(w).max() or 1.0
        ax.imshow(w, cmap="RdBu", vmin=-peak, vmax=peak, aspect="auto")
        ax.set_xticks(range(len(cols)), [f"{c}={v}" for c, v in cols], rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title("label layer weights", fontsize=9)
        fig.tight_layout()
        paths.append(out_dir / "label_layer.png")
        fig.savefig(paths[-1], dpi=150)
        plt.close(fig)
    return paths
