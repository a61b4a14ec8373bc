// sparsecbm explorer: plain JS over the JSON API of this server (nothing is loaded from elsewhere).
"use strict";

const state = { info: null, text: null, example: null, edits: {}, soft: {}, last: null, scores: null, seq: 0,
  poll: { dataset: 0, examples: 0 }, unit: "words", cf: new Set() };
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (p) => Number(p).toFixed(4);
const ms = (x) => (x == null ? "-" : `${Number(x).toFixed(1)} ms`);
const sleep = (t) => new Promise((r) => setTimeout(r, t));
// Every request that fills the prediction panel takes a number; an answer that is not the latest is dropped,
// so the panel always shows the prediction of the text it names (never an older request's answer).
const claim = () => ++state.seq;
const latest = (id) => id === state.seq;

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(`${res.status}: ${typeof data === "object" ? data.detail : data}`);
  return data;
}

function showError(err) {
  const box = $("#error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false; box.textContent = err.message || String(err);
}

async function guarded(fn) {
  try { showError(null); await fn(); } catch (err) { showError(err); }
}

function source() {
  return state.example != null ? { example: state.example } : { text: state.text };
}

// ------------------------------------------------------------------ rendering helpers
function progressBar(p, what) {
  const pct = p.total ? (100 * p.done / p.total).toFixed(0) : 0;
  return `<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="${p.total}" aria-valuenow="${p.done}">` +
    `<span class="spinner" aria-hidden="true"></span> ${esc(what)}: <progress value="${p.done}" max="${p.total}"></progress> ` +
    `<span class="count">${p.done} of ${p.total}</span> examples (${pct}%) <span class="muted">· predictions stay available meanwhile</span></div>`;
}

function labelBars(view, other) {
  const top = view.label;
  return view.label_values.map((v, i) => {
    const p = view.label_probs[i];
    const up = other ? p > other.label_probs[i] + 1e-9 : false;
    return `<div class="lrow${v === top ? " top" : ""}" data-label="${esc(v)}"><span class="lname">${esc(v)}${view.true_label === v ? " ✓" : ""}</span>` +
      `<span class="track"><span class="bar${up ? " up" : ""}" style="width:${(100 * p).toFixed(1)}%"></span></span>` +
      `<span class="lprob">${fmt(p)}</span></div>`;
  }).join("");
}

function tokenColour(score, peak) {
  const a = Math.min(Math.abs(score) / (peak || 1), 1).toFixed(2);
  return score >= 0 ? `rgba(68,119,170,${a})` : `rgba(204,102,119,${a})`;
}

function heatmaps(view, scores) {
  // scores: per concept a list per token (attributions), else the model's own token weights. In the word view
  // a word's score is the SUM of its pieces' scores (its attention mass; for attributions, their total).
  const tokens = view.tokens;
  const units = state.unit === "words" && view.words ? view.words : tokens.map((t, i) => ({ text: t, tokens: [i] }));
  return view.concepts.map((c, k) => {
    const s = scores ? scores[k] : c.token_weights;
    if (!s) return "";
    const u = units.map((w) => w.tokens.reduce((a, i) => a + s[i], 0));
    const peak = Math.max(...u.map(Math.abs));
    const spans = units.map((w, j) => {
      const pieces = w.tokens.length > 1 ? ` = ${w.tokens.map((i) => `${tokens[i]} ${s[i].toFixed(4)}`).join(" + ")}` : "";
      return `<span class="tok" title="${u[j].toFixed(4)}${esc(pieces)}" style="background:${tokenColour(u[j], peak)}">${esc(w.text)}</span>`;
    }).join("");
    return `<div class="hname">${esc(c.name)} = ${esc(c.predicted)}</div><div class="heatmap" data-concept="${esc(c.name)}" data-unit="${units === tokens ? "tokens" : state.unit}">${spans}</div>`;
  }).join("");
}

function conceptCards(before, after) {
  return before.concepts.map((c, k) => {
    const a = after.concepts[k];
    const edit = state.edits[c.name];
    const values = c.values.map((v, i) => {
      const isSet = typeof edit === "string" && edit === v;
      // the bar shows the distribution the label head reads: the edited one once the concept is set
      const shown = a.edited ? a.probs[i] : c.probs[i];
      return `<button class="value${isSet ? " set" : ""}${c.true === v ? " truth" : ""}" data-concept="${esc(c.name)}" data-value="${esc(v)}" title="set ${esc(c.name)} = ${esc(v)}">` +
        `<span>${esc(v)} <b>${fmt(c.probs[i])}</b>${a.edited ? ` → <b class="edited-p">${fmt(a.probs[i])}</b>` : ""}</span>` +
        `<span class="vtrack"><span class="vbar${a.edited ? " edited" : ""}" style="width:${(100 * shown).toFixed(1)}%"></span>` +
        `${a.edited ? `<span class="vwas" style="left:${(100 * c.probs[i]).toFixed(1)}%" title="the model's own ${fmt(c.probs[i])}"></span>` : ""}</span></button>`;
    }).join("");
    const contrib = c.contribution == null ? "" :
      `<span class="muted">contribution to logit ${esc(before.contributions_of)}: ${c.contribution.toFixed(3)}` +
      (a.edited && a.contribution != null ? ` → ${a.contribution.toFixed(3)} (of ${esc(after.contributions_of)})` : "") + `</span>`;
    const soft = state.soft[c.name] ? `<div class="soft">` + c.values.map((v, i) => {
      const cur = Array.isArray(edit) ? edit[i] : c.probs[i];
      return `<label>${esc(v)} <input type="range" min="0" max="1" step="0.01" value="${cur.toFixed(2)}" data-soft="${esc(c.name)}" data-index="${i}"></label>`;
    }).join("") + `</div>` : "";
    return `<div class="concept${a.edited ? " edited" : ""}" data-concept="${esc(c.name)}"><div class="head">` +
      `<span class="cname">${esc(c.name)}</span><span>predicted <b>${esc(c.predicted)}</b>${c.true != null ? ` · true <b>${esc(c.true)}</b>` : ""}</span>` +
      `${contrib}<button class="soft-toggle" data-concept="${esc(c.name)}">${state.soft[c.name] ? "hard" : "soft"}</button></div>` +
      `<div class="values">${values}</div>${soft}</div>`;
  }).join("");
}

function clearPrediction(message) {
  $("#prediction").hidden = true;
  $("#stale-note").hidden = true;
  $("#placeholder").hidden = false;
  $("#placeholder").textContent = message;
}

function render(res) {
  state.last = res;
  const before = res.before, after = res.after;
  $("#placeholder").hidden = true;
  $("#prediction").hidden = false;
  $("#prediction").dataset.example = state.example == null ? "" : String(state.example);
  $("#prediction").classList.remove("stale");
  $("#stale-note").hidden = true;
  $("#label-summary").innerHTML = `<span class="muted">${esc(before.label)}${after.label !== before.label ? ` → <b>${esc(after.label)}</b>` : ""}` +
    `${before.true_label != null ? ` · true ${esc(before.true_label)}` : ""}${before.truncated ? " · text truncated to the model's max length" : ""}</span>`;
  $("#label-before").innerHTML = labelBars(before);
  $("#label-after").innerHTML = labelBars(after, before);
  const n = Object.keys(state.edits).length;
  $("#edit-summary").textContent = n ? `${n} concept${n > 1 ? "s" : ""} set` : "(no edit)";
  $("#concepts").innerHTML = conceptCards(before, after);
  const t = res.ms || {};
  $("#timing").textContent = `server ${ms(t.server)}` + (t.edit != null ? ` · label head ${ms(t.edit)}` : "") +
    (t.backbone != null ? ` · backbone ${ms(t.backbone)} (new text)` : " · backbone cached");
  const kind = before.token_weights_kind;
  $("#token-kind").textContent = state.scores ? `${state.scores.method} attributions` :
    (kind ? `the model's own ${kind} weights per concept` : "this model has no token weights: compute an attribution");
  if (state.unit === "words") $("#token-kind").textContent += " (a word's weight: the sum of its pieces')";
  $("#heatmaps").innerHTML = heatmaps(before, state.scores ? state.scores.values : null);
}

// ------------------------------------------------------------------ actions
async function predict() {
  const text = $("#text").value;
  if (state.text !== text) { state.example = null; }
  state.text = text; state.edits = {}; state.soft = {}; state.scores = null;
  $("#mask-result").innerHTML = ""; $("#explain-cost").textContent = "";
  const id = claim();
  clearPrediction("predicting…");
  $("#cf-panel").hidden = true;
  const res = await api("/api/predict", source());
  if (latest(id)) render({ before: res, after: res, ms: res.ms });
  await showCounterfactuals(state.example, id);
}

async function intervene() {
  const set = {};
  for (const [name, v] of Object.entries(state.edits)) set[name] = v;
  const id = claim();
  const res = await api("/api/intervene", { ...source(), set });
  if (latest(id)) render(res);
}

function toggleValue(concept, value) {
  if (state.edits[concept] === value) delete state.edits[concept]; else state.edits[concept] = value;
  return intervene();
}

function softChange(concept) {
  const inputs = [...document.querySelectorAll(`input[data-soft="${CSS.escape(concept)}"]`)];
  const raw = inputs.map((i) => Number(i.value));
  const total = raw.reduce((a, b) => a + b, 0);
  if (total <= 0) return;
  state.edits[concept] = raw.map((x) => x / total);
  return intervene();
}

async function maskFix() {
  const concept = $("#mask-concept").value, value = $("#mask-value").value;
  const portion = Number($("#mask-portion").value) || undefined;
  const id = state.seq;
  const res = await api("/api/intervene/mask", { ...source(), concept, value, portion });
  if (id !== state.seq) return;  // another text or edit came since: this answer is not about what is shown
  const e = res.edit;
  const k = res.before.concepts.findIndex((c) => c.name === concept);
  const b = res.before.concepts[k], a = res.after.concepts[k];
  $("#mask-result").innerHTML = `<div class="card"><b>${esc(concept)}</b>: ${esc(b.predicted)} → <b>${esc(a.predicted)}</b> ` +
    `(target ${esc(value)}; ${e.swapped} mask entries swapped, sparsity ${e.sparsity_before.toFixed(3)} → ${e.sparsity_after.toFixed(3)}) · ` +
    `<span id="mask-ms">mask edit ${ms(res.ms.mask_edit)}</span> · server ${ms(res.ms.server)}` +
    `<div class="side-by-side"><div><h3>label before</h3><div class="labels">${labelBars(res.before)}</div></div>` +
    `<div><h3>label with the fixed subnetwork</h3><div class="labels">${labelBars(res.after, res.before)}</div></div></div>` +
    `<p class="muted small">The mask is restored after this request: other requests see the model as loaded.</p></div>`;
}

async function explain() {
  const method = $("#explain-method").value;
  $("#explain-cost").textContent = "computing…";
  const id = state.seq;
  const res = await api("/api/explain", { ...source(), method });
  if (id !== state.seq) return;
  state.scores = { method: res.method, values: res.explanation.concepts.map((c) => c.token_scores) };
  $("#explain-cost").textContent = `${res.method}: ${(1000 * res.seconds).toFixed(0)} ms for ${res.explanation.concepts.length} concepts`;
  render(state.last);
}

async function exportView(format) {
  const res = await fetch("/api/export", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...source(), format, method: $("#explain-method").value }) });
  if (!res.ok) throw new Error(`${res.status}: ${(await res.json()).detail}`);
  const blob = await res.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = format === "json" ? "explanations.json" : "report.html";
  a.click();
  URL.revokeObjectURL(a.href);
}

// ------------------------------------------------------------------ examples
async function loadExamples() {
  if (!state.info.data) { $("#examples-panel").innerHTML = `<p class="muted">No data loaded (start with data.root=DIR to browse examples).</p>`; return; }
  const params = new URLSearchParams();
  const add = (k, v) => { if (v) params.set(k, v); };
  add("q", $("#f-q").value); add("label", $("#f-label").value); add("wrong_label", $("#f-wrong-label").value);
  add("wrong_concept", $("#f-wrong-concept").value); add("concept", $("#f-concept").value); add("value", $("#f-value").value);
  add("counterfactual", $("#f-counterfactual").value);
  params.set("limit", "100");
  const id = ++state.poll.examples;
  let res = await api(`/api/examples?${params}`);
  while (res.status === "running") {  // the prediction filters wait for the split's background pass
    $("#examples-count").textContent = "";
    $("#examples").innerHTML = `<li class="pending">${progressBar(res, "predicting the split for this filter")}</li>`;
    await sleep(400);
    if (id !== state.poll.examples) return;
    res = await api(`/api/examples?${params}`);
  }
  if (id !== state.poll.examples) return;
  $("#examples-count").textContent = `(${res.matched} of ${res.total}, ${esc(res.split)})`;
  $("#examples").innerHTML = res.examples.map((e) =>
    `<li data-index="${e.index}">${esc(e.text.slice(0, 140))}${e.text.length > 140 ? "…" : ""}` +
    `<span class="tag">true ${esc(e.label)}</span>${e.predicted != null ? `<span class="tag${e.predicted !== e.label ? " bad" : ""}">pred ${esc(e.predicted)}</span>` : ""}` +
    `${e.counterfactuals ? `<span class="tag cf" title="human counterfactuals of this review">${e.counterfactuals} counterfactual${e.counterfactuals > 1 ? "s" : ""}</span>` : ""}</li>`).join("");
}

async function pickExample(index) {
  const id = claim();
  clearPrediction("predicting…");  // never the new text beside the previous prediction
  $("#mask-result").innerHTML = ""; $("#explain-cost").textContent = "";
  const ex = await api(`/api/examples/${index}`);
  if (!latest(id)) return;
  $("#text").value = ex.text;
  state.text = ex.text; state.example = index; state.edits = {}; state.soft = {}; state.scores = null;
  const res = await api("/api/predict", { example: index });
  if (latest(id)) render({ before: res, after: res, ms: res.ms });
  await showCounterfactuals(index, id);
}

// ------------------------------------------------------------------ other views
function grid(rows, cols, cell) {
  return `<table class="grid"><tr><th></th>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>` +
    rows.map((r, i) => `<tr><th>${esc(r)}</th>${cols.map((_, j) => cell(i, j)).join("")}</tr>`).join("") + `</table>`;
}
const shade = (x) => `style="background:rgba(68,119,170,${Math.max(0, Math.min(1, x)).toFixed(2)})"`;

async function loadSubnetworks() {
  const s = await api("/api/subnetworks");
  const box = $("#subnetworks");
  if (!s.available) { box.innerHTML = `<p class="muted">${esc(s.reason)}</p>`; return; }
  const names = Object.keys(s.concepts), blocks = s.masked_blocks.map(String);
  let html = `<p>${esc(s.granularity)} masks, scorer ${esc(s.scorer)}, target sparsity ${s.target_sparsity}; ${s.masked_params} masked weights, ${s.mask_bytes} mask bytes.</p>`;
  html += `<h2>Fraction of weights kept per layer</h2>` + grid(names, blocks.map((b) => `L${b}`), (i, j) => {
    const kept = 1 - s.concepts[names[i]].per_layer[blocks[j]]; return `<td ${shade(kept)}>${kept.toFixed(2)}</td>`; });
  html += `<h2>FFN neurons kept per layer</h2>` + grid(names, blocks.map((b) => `L${b}`), (i, j) => {
    const v = s.concepts[names[i]].ffn_kept[blocks[j]]; return v == null ? "<td>-</td>" : `<td ${shade(v)}>${v.toFixed(2)}</td>`; });
  html += `<h2>Attention heads kept (layer × head)</h2><div class="cards">` + names.map((c) => {
    const heads = s.concepts[c].heads_kept; const layers = Object.keys(heads);
    if (!layers.length) return "";
    const width = Math.max(...layers.map((l) => heads[l].length));
    return `<div class="card"><h3>${esc(c)}</h3>` + grid(layers.map((l) => `L${l}`), [...Array(width).keys()].map((h) => `h${h}`),
      (i, j) => { const v = heads[layers[i]][j]; return `<td ${shade(v)}>${v.toFixed(2)}</td>`; }) + `</div>`;
  }).join("") + `</div>`;
  const m = s.overlap_matrix;
  html += `<h2>Mask overlap between concepts (Jaccard, mean over layers)</h2>` +
    grid(m.concepts, m.concepts, (i, j) => `<td ${shade(m.mean_jaccard[i][j])}>${m.mean_jaccard[i][j].toFixed(2)}</td>`);
  const x = s.cross_mask;
  if (x) {
    html += `<h2 id="cross-mask">Cross-mask matrix (row: concept's test macro-F1 under column's mask)</h2>` +
      grid(x.concepts, x.concepts, (i, j) => `<td ${shade(x.matrix[i][j])}>${(100 * x.matrix[i][j]).toFixed(1)}</td>`) +
      `<p>specificity (own mask minus the mean of the others, points): ` +
      x.concepts.map((c) => `${esc(c)} ${(100 * x.specificity[c]).toFixed(1)}`).join(", ") + `</p>`;
  }
  box.innerHTML = html;
}

function curveSvg(curve) {
  const W = 420, H = 220, P = 34, colours = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377"];
  const policies = Object.keys(curve.curves);
  const K = curve.concepts.length;
  const x = (k) => P + (W - 2 * P) * k / Math.max(K, 1), y = (v) => H - P - (H - 2 * P) * v;
  let svg = `<svg width="${W}" height="${H}" role="img" aria-label="intervention curves"><line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#999"/><line x1="${P}" y1="${P}" x2="${P}" y2="${H - P}" stroke="#999"/>`;
  for (let k = 0; k <= K; k++) svg += `<text x="${x(k) - 3}" y="${H - P + 14}">${k}</text>`;
  for (const v of [0, 0.5, 1]) svg += `<text x="4" y="${y(v) + 3}">${v}</text>`;
  policies.forEach((p, i) => {
    const pts = curve.curves[p].map((pt) => `${x(pt.k).toFixed(1)},${y(pt.acc).toFixed(1)}`).join(" ");
    svg += `<polyline fill="none" stroke="${colours[i % colours.length]}" stroke-width="2" points="${pts}"/>` +
      `<text x="${W - P - 90}" y="${P + 12 * i}" style="fill:${colours[i % colours.length]}">${esc(p)}</text>`;
  });
  return svg + `<text x="${W / 2 - 70}" y="${H - 4}">concepts set to the truth (k)</text></svg>`;
}

async function loadDataset() {
  const box = $("#dataset");
  if (!state.info.data) { box.innerHTML = `<p class="muted">No data loaded (start with data.root=DIR).</p>`; return; }
  const id = ++state.poll.dataset;
  let d = await api("/api/dataset");
  while (d.status === "running") {  // the pass runs in the background: show how far, ask again
    box.innerHTML = progressBar(d, `computing the ${d.split} split`);
    await sleep(400);
    if (id !== state.poll.dataset) return;
    d = await api("/api/dataset");
  }
  const curve = await api("/api/curves");
  if (id !== state.poll.dataset) return;
  let html = `<h2>${esc(d.split)} split: ${d.n} examples</h2><p>task accuracy <b>${(100 * d.task.acc).toFixed(1)}%</b>, macro-F1 <b>${(100 * d.task.f1).toFixed(1)}</b> <span class="muted">(computed here, ${d.seconds.toFixed(1)} s)</span></p>`;
  if (d.bottleneck) {
    const b = d.bottleneck, keys = Object.keys(b).filter((k) => b[k] && typeof b[k] === "object" && "acc" in b[k]);
    html += `<h2>Ceiling and leakage (the run's results.json, test split)</h2><table><tr><th>key</th><th>acc</th><th>macro-F1</th></tr>` +
      keys.map((k) => `<tr><th>${esc(k)}</th><td>${(100 * b[k].acc).toFixed(1)}</td><td>${b[k].f1 == null ? "-" : (100 * b[k].f1).toFixed(1)}</td></tr>`).join("") + `</table>`;
  } else {
    html += `<p class="muted">No results.json next to the checkpoint's run folder: no ceiling / leakage summary.</p>`;
  }
  html += `<h2>Intervention curves (task accuracy vs k concepts set to the truth)</h2>${curveSvg(curve)}`;
  html += `<h2>Confusion matrices <span class="muted small">(rows: true, columns: predicted)</span></h2><div class="cards">`;
  html += `<div class="card"><h3>label</h3>${grid(d.labels, d.labels, (i, j) => `<td>${d.label_confusion[i][j]}</td>`)}</div>`;
  for (const [name, c] of Object.entries(d.concepts)) {
    html += `<div class="card"><h3>${esc(name)} <span class="muted small">acc ${(100 * c.acc).toFixed(1)}%, F1 ${(100 * c.f1).toFixed(1)}</span></h3>` +
      grid(c.values, c.values, (i, j) => `<td>${c.confusion[i][j]}</td>`) + `</div>`;
  }
  box.innerHTML = html + `</div>`;
}

async function compareText() {
  const box = $("#compare");
  if (!state.info.compare) { box.innerHTML = `<p class="muted">Start the server with compare_ckpt_path=... to compare two checkpoints.</p>`; return; }
  if (!state.text) { box.innerHTML = `<p class="muted">Predict a text in the Text view first.</p>`; return; }
  const res = await api("/api/compare", source());
  const column = (role, info, v) => `<div class="compare-side" data-role="${role}"><h3><span class="role">${role === "main" ? "A · main" : "B · compare"}</span> ` +
    `<span class="model-title">${esc(info.title)}</span> <span class="muted small">${esc(info.cbm)}</span></h3>` +
    `<p>label <b>${esc(v.label)}</b></p><div class="labels">${labelBars(v)}</div>` +
    v.concepts.map((c) => `<div class="lrow"><span class="lname" style="width:7em">${esc(c.name)}</span><span>${esc(c.predicted)} (${fmt(Math.max(...c.probs))})</span></div>`).join("") + `</div>`;
  box.innerHTML = column("main", state.info, res.main) + column("compare", state.info.compare, res.compare);
}

// ------------------------------------------------------------------ wiring
function fillSelect(sel, options, keepFirst = true) {
  const first = keepFirst ? sel.options[0]?.outerHTML || "" : "";
  sel.innerHTML = first + options.map((o) => `<option value="${esc(o)}">${esc(o)}</option>`).join("");
}

async function init() {
  const info = await api("/api/info");
  state.info = info;
  $("#model-info").textContent = `${info.title} · ${info.cbm}` +
    ` · ${info.concepts.length} concepts${info.sparse ? " · per-concept subnetworks" : ""}${info.data ? ` · data ${info.data.name}/${info.data.split} (${info.data.size})` : ""}` +
    `${info.compare ? ` · compare: ${info.compare.title}` : ""}`;
  fillSelect($("#f-label"), info.label.values);
  fillSelect($("#f-wrong-concept"), info.concepts.map((c) => c.name));
  fillSelect($("#f-concept"), info.concepts.map((c) => c.name));
  fillSelect($("#mask-concept"), info.concepts.map((c) => c.name), false);
  const methods = [...(info.token_weights ? [info.token_weights] : []), "lig", "gradxinput", "saliency", "ablation"];
  fillSelect($("#explain-method"), methods, false);
  $("#mask-portion").value = info.mask_portion;
  $("#mask-panel").hidden = !info.mask_level;
  const valuesOf = (name) => (info.concepts.find((c) => c.name === name) || { values: [] }).values;
  $("#f-concept").addEventListener("change", () => fillSelect($("#f-value"), valuesOf($("#f-concept").value)));
  const maskValues = () => fillSelect($("#mask-value"), valuesOf($("#mask-concept").value), false);
  $("#mask-concept").addEventListener("change", maskValues); maskValues();

  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => guarded(async () => {
    document.querySelectorAll("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
    document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${b.dataset.view}`; });
    if (b.dataset.view === "subnetworks") await loadSubnetworks();
    if (b.dataset.view === "dataset") await loadDataset();
    if (b.dataset.view === "compare") await compareText();
  })));
  $("#predict").addEventListener("click", () => guarded(predict));
  $("#text").addEventListener("input", () => {  // the shown prediction no longer belongs to the text: say so
    const stale = !$("#prediction").hidden && $("#text").value !== state.text;
    $("#prediction").classList.toggle("stale", stale);
    $("#stale-note").hidden = !stale;
  });
  $("#token-unit").addEventListener("change", () => { state.unit = $("#token-unit").value; if (state.last) render(state.last); });
  $("#reset").addEventListener("click", () => guarded(async () => { state.edits = {}; state.soft = {}; await intervene(); }));
  $("#mask-run").addEventListener("click", () => guarded(maskFix));
  $("#explain-run").addEventListener("click", () => guarded(explain));
  $("#export-json").addEventListener("click", () => guarded(() => exportView("json")));
  $("#export-html").addEventListener("click", () => guarded(() => exportView("html")));
  $("#compare-run").addEventListener("click", () => guarded(compareText));
  $("#f-apply").addEventListener("click", () => guarded(loadExamples));
  $("#f-q").addEventListener("keydown", (e) => { if (e.key === "Enter") guarded(loadExamples); });
  $("#examples").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-index]");
    if (li) guarded(() => pickExample(Number(li.dataset.index)));
  });
  $("#concepts").addEventListener("click", (e) => {
    const v = e.target.closest("button.value");
    if (v) return guarded(() => toggleValue(v.dataset.concept, v.dataset.value));
    const t = e.target.closest("button.soft-toggle");
    if (t) { state.soft[t.dataset.concept] = !state.soft[t.dataset.concept]; render(state.last); }
  });
  $("#concepts").addEventListener("change", (e) => {
    if (e.target.dataset.soft) guarded(() => softChange(e.target.dataset.soft));
  });
  if (info.data) {  // which examples have human counterfactuals (CEBaB's edited reviews)
    const cf = await api("/api/counterfactuals");
    state.cf = new Set(cf.examples);
    const filter = $("#f-counterfactual");
    filter.disabled = !cf.available;
    filter.title = cf.available ? `${cf.n_pairs} pairs (${cf.source}) in the ${cf.split} split` : cf.reason;
  }
  await loadExamples();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => guarded(init));
