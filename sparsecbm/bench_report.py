"""The benchmark's markdown report (``bench.md``): what was timed, the per-configuration table, the
side-by-side inference comparison, scaling with K and sequence length, intervention latency and targets."""

from __future__ import annotations

from typing import Any


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1000 * v:.1f}"


def what_it_times(result: dict[str, Any]) -> list[str]:
    """The paragraph that says what the numbers are (models, step, updates, load)."""
    m, a = result["machine"], result.get("amortise") or {}
    cbms = result.get("cbms") or {}
    cem = cbms.get("cem") or {}
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
             + (f", GPU {m['cuda']}" if m.get("cuda") else "")
             + (f"; load average (1/5/15 min) {m['load_avg']} at the start, {result.get('load_avg_end')} at the end"
                if m.get("load_avg") else ""), ""]
    if cem:
        lines.append(f"Timed: each config's `cbm` model as training runs it (the mode's own losses, backward, "
                     f"gradient clipping, AdamW), batch {result['batch_size']}. `cem` = mode {cem.get('mode')}, "
                     f"activation {cem.get('activation')}, tokens {cem.get('tokens')}, concept class weight "
                     f"{cem.get('concept_class_weight')}, train_intervention_prob {cem.get('train_intervention_prob')}.")
    ups = [(n, r["score_updates"]) for n, r in result["configs"].items() if r.get("score_updates")]
    for n, u in ups:
        lines.append(f"`{n}`: its {u['scorer']} mask updates ({u['batches']} score batches each, "
                     f"{1000 * u['seconds']:.0f} ms per update, median of {u['reps']}) amortised over a default run: "
                     f"{u['updates']} updates in {u['total_steps']} steps ({a.get('epochs')} epochs of "
                     f"{a.get('n_train')} examples, batch {a.get('batch_size')}): "
                     f"+{1000 * u['amortised_s_per_step']:.1f} ms per step.")
    return lines + [""]


def markdown(result: dict[str, Any]) -> str:
    lines = what_it_times(result)
    lines += ["| config | cbm | train ex/s (median [IQR]) | with score updates | × dense | × dense, no updates | "
              "× dense at the same padding | peak RSS (GB) | infer ms/ex @1 | infer ms/ex @32 | mask MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["configs"].items():
        t, inf = r["train"], r.get("inference", {})
        padded = r.get("ratio_to_dense_same_padding")
        amortised = "-" if not r.get("train_amortised") else f"{r['train_amortised']['examples_per_s']:.2f}"
        mask_mb = f"{r['mask_bytes'] / 2**20:.2f}"
        if r.get("published_mask_bytes"):  # what the published code would hold: float32 per weight per concept
            mask_mb = f"{r['published_mask_bytes'] / 2**20:.2f} (float32, as published)"
        lines.append(
            f"| {name} | {r['spec'].get('cbm', 'joint')} | {t['examples_per_s']:.2f} [{t['iqr'][0]:.2f}, "
            f"{t['iqr'][1]:.2f}] | {amortised} | "
            f"{r['ratio_to_dense']:.3f} | {r.get('ratio_to_dense_no_updates', r['ratio_to_dense']):.3f} | "
            f"{'-' if padded is None else f'{padded:.3f}'} | {t['peak_rss_bytes'] / 2**30:.2f} | "
            f"{_ms(inf.get('batch_1_s'))} | {_ms(inf.get('batch_32_s'))} | {mask_mb} |")
    pair = result.get("inference_pair")
    if pair:
        names = pair["configs"]
        lines += ["", f"Inference side by side (one process, the models alternating on the same batches, "
                  f"{pair['reps']} repetitions; ms per example, median [IQR]; ratios to {names[0]}):", "",
                  "| batch | " + " | ".join(names) + " | " + " | ".join(f"{n} / {names[0]}" for n in names[1:])
                  + (f" | {names[-1]} / {names[-2]}" if len(names) > 2 else "") + " |",
                  "|---" * (1 + 2 * len(names) - 1 + (len(names) > 2)) + "|"]
        for key, row in pair.items():
            if not key.startswith("batch_"):
                continue
            cells = [f"{_ms(row[n]['seconds'])} [{_ms(row[n]['iqr'][0])}, {_ms(row[n]['iqr'][1])}]" for n in names]
            ratios = [f"{row['ratio'][n]:.3f}" for n in names[1:]]
            if len(names) > 2:
                ratios.append(f"{row[names[-1]]['seconds'] / row[names[-2]]['seconds']:.3f}")
            lines.append(f"| {key.split('_')[1]} | " + " | ".join(cells + ratios) + " |")
    for title, key in (("Scaling with K", "k_scaling"), ("Scaling with sequence length", "length_scaling")):
        rows = result.get(key) or {}
        if rows:
            lines += ["", f"{title} (training ex/s without score updates, median [IQR] over the timed steps):", "",
                      "| setting | dense ex/s | sparse ex/s | ratio of medians |", "|---|---|---|---|"]
            for setting, r in rows.items():
                d, s = r["dense"], r["sparse"]
                iq = {k: f" [{r[k][0]:.2f}, {r[k][1]:.2f}]" if k in r else "" for k in ("dense_iqr", "sparse_iqr")}
                lines.append(f"| {setting} | {d:.2f}{iq['dense_iqr']} | {s:.2f}{iq['sparse_iqr']} | {s / d:.3f} |")
    rows = [(n, r["intervention"]) for n, r in result["configs"].items() if r.get("intervention")]
    if rows:
        lines += ["", "Intervention latency per intervened concept (one example). Mask level: after the example's "
                  "prediction in the same replay block (`intervene level=mask`), and cold (no prediction before it: "
                  "the edit runs the unmasked lower blocks itself, as the explorer's \"Fix subnetwork\" does); median "
                  "[IQR] over the examples:", "",
                  "| config | concept level (ms) | mask level (ms) | mask level, cold / explorer (ms) |",
                  "|---|---|---|---|"]
        for n, iv in rows:
            mask, cold = (f"{1000 * iv[k]:.1f} [{1000 * iv[k[:-2] + '_iqr_s'][0]:.1f}, "
                          f"{1000 * iv[k[:-2] + '_iqr_s'][1]:.1f}]" if k in iv else "-"
                          for k in ("mask_level_s", "mask_level_cold_s"))
            lines.append(f"| {n} | {1000 * iv['concept_level_s']:.2f} | {mask} | {cold} |")
    if result.get("targets"):
        lines += ["", "Targets:", "", "| config | metric | target | measured | met |", "|---|---|---|---|---|"]
        for t in result["targets"]:
            bound = f">= {t['min']}" if "min" in t else f"<= {t['max']}"
            lines.append(f"| {t['config']} | {t['metric']} | {bound} | {t['value']:.3f} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"
