"""Self-contained HTML report (inline CSS, no scripts or network) and matplotlib PNGs for papers."""

from __future__ import annotations

import html
import re
from pathlib import Path

from sparsecbm.interpret.explanation import Explanation, ExplanationSet
from sparsecbm.interpret.words import word_scores, words

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1em;margin:.8em 0 .3em}
.tok{padding:1px 2px;margin:1px;border-radius:3px;display:inline-block;font-family:monospace}
.row{display:flex;align-items:center;gap:.5em;margin:2px 0}.name{min-width:11em;flex:none;white-space:nowrap;font-weight:600}
.bar{height:12px;background:#4477aa;display:inline-block}.neg{background:#cc6677}
.track{width:240px;background:#eee;display:inline-block}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
.muted{color:#888}.example{border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}
.levels td{width:3em;text-align:center}.levels td.pred{outline:2px solid #222}
.bars{display:grid;grid-template-columns:max-content 240px max-content;gap:2px .5em;align-items:center}
.bars .row{display:contents}
"""


def _esc(x) -> str:
    return html.escape(str(x))


#: Special tokens as tokenizers spell them (``[CLS]``, ``<s>``, ``<|endoftext|>``): words of their own.
SPECIAL = re.compile(r"\[[A-Z]+\]|<[^<>\s]+>")


def token_heatmap(tokens: list[str], scores: list[float], concept: str) -> str:
    """One concept's words coloured by score (blue: supports the predicted value, red: against). Word pieces
    are merged into words and a word's score is the sum of its pieces' (the title lists them)."""
    special = {t for t in tokens if SPECIAL.fullmatch(t)}
    units = words(tokens, special=special)
    totals = word_scores(scores, [w["tokens"] for w in units])
    peak = max((abs(s) for s in totals), default=0.0) or 1.0
    spans = []
    for w, s in zip(units, totals):
        a = min(abs(s) / peak, 1.0)
        rgb = "68,119,170" if s >= 0 else "204,102,119"
        pieces = " = " + " + ".join(f"{tokens[i]} {scores[i]:.4f}" for i in w["tokens"]) if len(w["tokens"]) > 1 else ""
        spans.append(f'<span class="tok" title="{s:.4f}{_esc(pieces)}" style="background:rgba({rgb},{a:.2f})">'
                     f'{_esc(w["text"])}</span>')
    return f'<div class="heatmap" data-concept="{_esc(concept)}">{"".join(spans)}</div>'


def _bar_row(name: str, value: float, scale: float, text: str) -> str:
    width = int(240 * min(abs(value) / (scale or 1.0), 1.0))
    cls = "bar" + (" neg" if value < 0 else "")
    return (
        f'<div class="row"><span class="name">{_esc(name)}</span><span class="track">'
        f'<span class="{cls}" style="width:{width}px"></span></span><span>{_esc(text)}</span></div>'
    )


def _bars(rows: list[tuple[str, float, float, str]]) -> str:
    """Bar rows in one grid: the name column is as wide as the longest name (names are never cut)."""
    return '<div class="bars">' + "".join(_bar_row(*row) for row in rows) + "</div>"


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
    # graded concepts: levels in order (low to high), then the values outside the order
    parts += [level_strip(c) for c in e.concepts if c.levels]
    parts.append(_bars([(f"{c.name}={v}", p, 1.0, f"{p:.2f}") for c in e.concepts if not c.levels
                        for v, p in zip(c.values, c.probs)]))
    if e.contributions:
        scale = max(abs(v) for v in e.contributions.values()) or 1.0
        parts.append(f"<h3>Contributions to the logit of label {_esc(e.predicted_label)}</h3>")
        parts.append(_bars([(name, v, scale, f"{v:+.3f}") for name, v in e.contributions.items()]))
        if e.label_bias is not None:
            parts.append(f'<p class="muted">bias {e.label_bias:+.3f}</p>')
    parts.append("<h3>Label probabilities</h3>")
    parts.append(_bars([(v, p, 1.0, f"{p:.2f}") for v, p in zip(e.label_values, e.label_probs)]))
    parts.append("<h3>Subnetwork</h3>" + subnetwork_heatmap(e.subnetwork) + "</div>")
    return "\n".join(parts)


def reads_embeddings(es: ExplanationSet) -> bool:
    """Whether the label layer reads concept embeddings (weights per embedding dimension ``d0, d1, ...``)."""
    if es.meta.get("activation") is not None:
        return es.meta["activation"] == "embedding"
    keys = [k for used in (es.label_layer or {}).values() for c in used for k in c.weights]
    return bool(keys) and all(re.fullmatch(r"[dr]\d+", k) for k in keys)


def concept_norms(es: ExplanationSet) -> tuple[list[str], list[str], list[list[float]]]:
    """``(concepts, labels, norms)``: the L2 norm of the weights each label gives each concept's block, ``K x L``
    (0 where a sparse label layer does not read the concept)."""
    labels = list(es.label_layer or {})
    model_order = [c.name for c in es.explanations[0].concepts] if es.explanations else []
    concepts = list(dict.fromkeys([*model_order, *(c.concept for used in es.label_layer.values() for c in used)]))
    norms = {(c.concept, label): c.norm for label, used in es.label_layer.items() for c in used}
    return concepts, labels, [[norms.get((c, label), 0.0) for label in labels] for c in concepts]


def label_layer_html(es: ExplanationSet) -> str:
    if not es.label_layer:
        return '<p class="muted">The label head is not linear: no per-label concept weights.</p>'
    if reads_embeddings(es):  # one number per concept and label; the per-dimension weights are in the JSON
        concepts, labels, norms = concept_norms(es)
        peak = max((v for row in norms for v in row), default=0.0) or 1.0
        head = "".join(f"<th>label {_esc(label)}</th>" for label in labels)
        rows = "".join(f"<tr><th>{_esc(c)}</th>" + "".join(
            f'<td style="background:rgba(68,119,170,{v / peak:.2f})">{v:.2f}</td>' for v in row) + "</tr>"
            for c, row in zip(concepts, norms))
        return ("<p>The label layer reads each concept's embedding; a cell is the L2 norm of the weights a label "
                "gives that concept's block (how strongly the label reads it; the per-dimension weights are in "
                "<code>explanations.json</code>, <code>label_layer</code>).</p>"
                f"<table class='label-layer'><tr><th>concept</th>{head}</tr>{rows}</table>")
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
        f"label sparsity: {_esc(es.label_sparsity)}"
        + (f"; token gates: {_esc(es.token_gates)}" if es.token_gates else "") + "</p>"
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
        paths.append(_token_png(e, f"example {i}: predicted {e.predicted_label} ({es.method})",
                                out_dir / f"tokens_{i}.png", plt, np))
    if es.label_layer:
        paths.append(_label_layer_png(es, out_dir / "label_layer.png", plt, np))
    return paths


#: PNG widths stay within ~1,500 px at 150 dpi: token heatmaps wrap after this many tokens.
PNG_DPI, TOKENS_PER_LINE = 150, 40


def _token_png(e: Explanation, title: str, path: Path, plt, np) -> Path:
    """Concepts x tokens, normalised per concept, in lines of at most :data:`TOKENS_PER_LINE` tokens."""
    m = np.array([c.token_scores for c in e.concepts])
    peak = np.abs(m).max(axis=1, keepdims=True)
    m = m / np.where(peak == 0, 1, peak)
    starts = list(range(0, max(len(e.tokens), 1), TOKENS_PER_LINE))
    width = min(len(e.tokens), TOKENS_PER_LINE)
    fig, axes = plt.subplots(len(starts), 1, squeeze=False,
                             figsize=(max(4.0, 0.2 * width + 1.8), len(starts) * (0.45 * len(e.concepts) + 0.9) + 0.4))
    labels = [f"{c.name}={c.predicted}" for c in e.concepts]  # whole value names: never cut
    for ax, start in zip(axes[:, 0], starts):
        part = m[:, start:start + TOKENS_PER_LINE]
        ax.imshow(part, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(part.shape[1]), e.tokens[start:start + TOKENS_PER_LINE], rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def _label_layer_png(es: ExplanationSet, path: Path, plt, np) -> Path:
    """The label layer: per concept value and label its weight, or for concept embeddings the norm of each
    concept's block per label (``K x L``: one column per dimension would be thousands of pixels wide)."""
    labels = list(es.label_layer)
    if reads_embeddings(es):
        rows, _, norms = concept_norms(es)
        w, cmap, title = np.array(norms), "Blues", "label layer: weight-block norm per concept and label"
        vmin, vmax = 0.0, float(w.max()) or 1.0
    else:
        cols = sorted({(c.concept, v) for used in es.label_layer.values() for c in used for v in c.weights})
        w = np.zeros((len(cols), len(labels)))
        for j, label in enumerate(labels):
            for c in es.label_layer[label]:
                for v, x in c.weights.items():
                    w[cols.index((c.concept, v)), j] = x
        rows, cmap, title = [f"{c}={v}" for c, v in cols], "RdBu", "label layer weights"
        vmax = float(np.abs(w).max()) or 1.0
        vmin = -vmax
    fig, ax = plt.subplots(figsize=(min(9.5, 0.6 * len(labels) + 2.8), 0.32 * len(rows) + 1.4))
    image = ax.imshow(w, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(labels)), [f"label {label}" for label in labels], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.05)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path
