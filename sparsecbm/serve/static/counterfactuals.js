// sparsecbm explorer: the human-counterfactual panel of the Text view (GET /api/counterfactuals/{index}).
// Loaded after app.js; uses its helpers ($, esc, fmt, api, latest) and state.cf (the examples that have pairs).
"use strict";

// The example's human counterfactuals: per pair, the label distribution before (N(x)), with the concept set to
// the edited value (do(C=b) on x) and on the human-edited text (N(x')), the two changes, and their ICaCE errors.
const signed = (d) => { const r = fmt(Math.abs(d)); return Number(r) === 0 ? ` ${r}` : `${d > 0 ? "+" : "−"}${r}`; };
function cfPair(p, k) {
  const rows = p.labels.map((v, i) => {
    const cell = (d) => `<td class="${d > 1e-9 ? "pos" : d < -1e-9 ? "neg" : ""}">${signed(d)}</td>`;
    return `<tr data-label="${esc(v)}"><th>${esc(v)}</th><td class="cf-before">${fmt(p.before[i])}</td>` +
      `<td class="cf-intervened">${fmt(p.intervened[i])}</td><td class="cf-counterfactual">${fmt(p.counterfactual[i])}</td>` +
      `${cell(p.predicted_change[i])}${cell(p.actual_change[i])}</tr>`;
  }).join("");
  const e = p.errors;
  const other = p.counterfactual_example != null ? ` <span class="muted small">(example ${p.counterfactual_example})</span>` : "";
  return `<div class="card cf-pair" data-pair="${k}" data-concept="${esc(p.concept)}"><h3>${esc(p.concept)}: ${esc(p.before_value)} → ` +
    `<b>${esc(p.after_value)}</b></h3><div class="cf-text">${esc(p.counterfactual_text)}${other}</div>` +
    `<table class="cf-table"><tr><th>label</th><th>this review</th><th>set ${esc(p.concept)} = ${esc(p.after_value)}</th>` +
    `<th>human edit</th><th>predicted change</th><th>actual change</th></tr>${rows}</table>` +
    `<p class="cf-errors">ICaCE error (predicted vs actual change): L2 <b class="cf-l2">${fmt(e.l2)}</b> · ` +
    `cosine distance <b class="cf-cosine">${fmt(e.cosine)}</b> · NormDiff <b class="cf-normdiff">${fmt(e.normdiff)}</b></p></div>`;
}

async function showCounterfactuals(index, id) {
  $("#cf-panel").hidden = true; $("#cf-pairs").innerHTML = "";
  if (index == null || !state.cf.has(index)) return;
  const res = await api(`/api/counterfactuals/${index}`);
  if (!latest(id) || !res.pairs.length) return;
  $("#cf-pairs").innerHTML = res.pairs.map(cfPair).join("");
  $("#cf-panel").hidden = false;
}
