"""Latency of the explorer: ``python -m sparsecbm.serve.bench ckpt_path=... [data.root=DIR] [bench.texts=50]``.

Measures, on texts of the split (each new to the cache when first sent):

- the model's own forward per text (tokenised beforehand, batch 1, ``no_grad``) and the tokeniser alone;
- ``/api/predict`` per new text: server time (the ``ms.server`` the explorer reports: tokenise, backbone,
  views) and the in-process HTTP round trip (FastAPI TestClient: JSON, routing, validation);
- ``/api/intervene`` per concept edit on a cached text (only the label head runs): server time and round trip;
- ``/api/intervene/mask`` (sparse models): the mask edit itself and the whole request;
- with ``bench.dataset=true``: the Dataset view's background pass over the whole split (seconds, the longest
  time it held the model) and ``/api/predict`` round trips of new texts sent while it runs.

Prints a table and writes ``serve_bench.json`` (medians, p90s, the ratio of a new text's server time to the
model's forward, and the issue's targets with whether they are met) into the run folder or ``bench.out``.
"""

from __future__ import annotations

import logging
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from sparsecbm.config import hydra_entry_point

TARGETS = {"edit_server_ms": 50.0, "new_text_over_forward": 1.5, "predict_during_dataset_ms": 1000.0}


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median": statistics.median(xs), "p90": xs[min(len(xs) - 1, int(0.9 * len(xs)))], "mean": statistics.fmean(xs),
            "n": len(xs)}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def post(client, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(round trip in ms, the ``ms`` timings the server reported)."""
    start = time.perf_counter()
    response = client.post(path, json=body)
    rtt = 1000 * (time.perf_counter() - start)
    response.raise_for_status()
    return rtt, response.json()["ms"]


def dataset_pass(explorer, client, texts: list[str], interval: float = 0.5) -> dict[str, Any]:
    """Open the Dataset view (its pass starts in the background) and send a new text to ``/api/predict``
    every ``interval`` seconds until the pass is done: the pass's seconds, its longest hold of the model lock,
    and the predictions' round trips (ms)."""
    explorer._cache.clear()
    start = time.perf_counter()
    assert client.get("/api/dataset").status_code in (200, 202)
    job, waits = explorer.split_pass(), []
    for t in texts:
        if job.status != "running":
            break
        waits.append(post(client, "/api/predict", {"text": t})[0])
        time.sleep(interval)
    job.wait()
    if job.status != "done":
        raise RuntimeError(f"the Dataset pass failed: {job.error}")
    return {"examples": job.total, "seconds": time.perf_counter() - start, "lock_ms_max": job.lock_ms_max,
            "split_batch_size": explorer.limits.split_batch_size,
            "predict_during_pass": summary(waits) | {"max": max(waits)} if waits else None}


def run(cfg: DictConfig) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from sparsecbm.serve.app import create_app
    from sparsecbm.serve.cli import build

    b = cfg.bench
    for name in ("httpx", "httpx2"):  # the TestClient logs every request at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    if b.get("threads"):
        torch.set_num_threads(int(b.threads))
    torch.manual_seed(int(cfg.seed))
    rng = random.Random(int(cfg.seed))
    explorer, _ = build(cfg)
    if explorer.dm is None:
        raise SystemExit("the benchmark reads texts of the split: pass data.root=DIR")
    texts = list(dict.fromkeys(explorer.dm.raw[cfg.split].texts))[: int(b.texts) + int(b.warmup)]
    warm, texts = texts[: int(b.warmup)], texts[int(b.warmup):]
    model, session = explorer.model, explorer.session
    client = TestClient(create_app(explorer))

    def forward(text):
        batch, _ = session.tokenize([text])
        with torch.no_grad():
            return _timed(lambda: model(batch["input_ids"], batch["attention_mask"]))

    for t in warm:  # first calls allocate; not measured
        forward(t)
        client.post("/api/predict", json={"text": t})
    explorer._cache.clear()
    fwd, tok, new_server, new_http = [], [], [], []
    for t in texts:  # interleaved, so that load from elsewhere on the machine hits both alike
        fwd.append(forward(t))
        tok.append(_timed(lambda t=t: session.tokenize([t])))
        rtt, ms = post(client, "/api/predict", {"text": t})
        new_http.append(rtt)
        new_server.append(ms["server"])
    edit_server, edit_http = [], []
    for t in texts:  # now cached
        for _ in range(int(b.edits)):
            spec = rng.choice(list(explorer.concepts))
            value = rng.choice(list(spec.values))
            rtt, ms = post(client, "/api/intervene", {"text": t, "set": {spec.name: value}})
            edit_http.append(rtt)
            edit_server.append(ms["server"])
    out: dict[str, Any] = {
        "kind": "serve_bench",
        "checkpoint": str(cfg.ckpt_path),
        "model": {"backbone": explorer.info()["backbone"], "mode": explorer.session.mode,
                  "activation": model.activation, "sparse": explorer.sparse, "concepts": len(explorer.concepts)},
        "texts": len(texts), "edits_per_text": int(b.edits), "split": cfg.split, "max_length": session.max_length,
        "mean_tokens": statistics.fmean(len(session.tokenize([t])[0]["input_ids"][0]) for t in texts),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine()},
        "ms": {"forward": summary(fwd), "tokenize": summary(tok), "new_text_server": summary(new_server),
               "new_text_http": summary(new_http), "edit_server": summary(edit_server), "edit_http": summary(edit_http)},
    }
    if explorer.mask_level:
        mask_edit, mask_server = [], []
        for t in texts[: int(b.mask_texts)]:
            spec = rng.choice(list(explorer.concepts))
            _, ms = post(client, "/api/intervene/mask", {"text": t, "concept": spec.name,
                                                         "value": rng.choice(list(spec.values))})
            mask_edit.append(ms["mask_edit"])
            mask_server.append(ms["server"])
        out["ms"].update({"mask_edit": summary(mask_edit), "mask_server": summary(mask_server)})
    if b.get("dataset"):
        out["dataset"] = dataset_pass(explorer, client, [f"{t} (sent during the pass)" for t in texts])
    m = out["ms"]
    ratio = m["new_text_server"]["median"] / m["forward"]["median"]
    ratio_tok = m["new_text_server"]["median"] / (m["forward"]["median"] + m["tokenize"]["median"])
    out["ratios"] = {"new_text_server_over_forward": ratio, "new_text_server_over_tokenize_plus_forward": ratio_tok}
    out["targets"] = {
        "edit_server_ms": {"target": TARGETS["edit_server_ms"], "value": m["edit_server"]["median"],
                           "met": m["edit_server"]["median"] <= TARGETS["edit_server_ms"]},
        "new_text_over_forward": {"target": TARGETS["new_text_over_forward"], "value": ratio,
                                  "met": ratio <= TARGETS["new_text_over_forward"]},
    }
    during = (out.get("dataset") or {}).get("predict_during_pass")
    if during:
        out["targets"]["predict_during_dataset_ms"] = {"target": TARGETS["predict_during_dataset_ms"],
                                                      "value": during["max"],
                                                      "met": during["max"] <= TARGETS["predict_during_dataset_ms"]}
    from rich.console import Console
    from rich.table import Table

    from sparsecbm.results import write_json

    path = Path(b.out) if b.get("out") else Path(cfg.paths.output_dir) / "serve_bench.json"
    write_json(path, out)
    table = Table(title=f"explorer latency ({len(texts)} texts, {out['model']['backbone']}, ms)")
    for col in ("measure", "median", "p90", "n"):
        table.add_column(col)
    for key, s in m.items():
        table.add_row(key, f"{s['median']:.2f}", f"{s['p90']:.2f}", str(s["n"]))
    table.add_row("new text server / forward", f"{ratio:.2f}x", "", "")
    table.add_row("new text server / (tokenize + forward)", f"{ratio_tok:.2f}x", "", "")
    if during:
        d = out["dataset"]
        table.add_row(f"predict during the Dataset pass ({d['examples']} ex., {d['seconds']:.0f} s; longest lock "
                      f"{d['lock_ms_max']:.0f} ms)", f"{during['median']:.2f}", f"{during['p90']:.2f}", str(during["n"]))
    Console().print(table)
    print(f"written: {path}")
    return out


@hydra_entry_point("serve")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
