"""``python -m sparsecbm.serve``: serves the page and the API from a subprocess; user errors exit 2 with one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from testkit import ROOT, TINY_BERT, TINY_DATA, compose_cfg

from sparsecbm.errors import ConfigError
from sparsecbm.interpret.intervention import intervene
from sparsecbm.serve.cli import ServeError, bind, build, host_warning, url

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cmd(tmp_path, *args):
    return [sys.executable, "-m", "sparsecbm.serve", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache", *args]


def test_cli_serves_page_predict_and_intervene(serve_ckpts, tmp_path):
    port = free_port()
    proc = subprocess.Popen(serve_cmd(tmp_path, f"ckpt_path={serve_ckpts['dense']}", f"data.root={TINY_DATA}", f"port={port}"),
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []  # the URL line is printed once the socket listens (Hydra's log lines come first)
        while not lines or not lines[-1].startswith("sparsecbm explorer:"):
            lines.append(proc.stdout.readline())
            assert lines[-1] or proc.poll() is None, (lines, proc.stderr.read())
        line = lines[-1]
        assert line.startswith(f"sparsecbm explorer: http://127.0.0.1:{port}/"), (line, proc.stderr.read() if proc.poll() else "")
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                page = httpx.get(base + "/", timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert page.status_code == 200 and "sparsecbm explorer" in page.text
        text = "The pasta was cold."
        pred = httpx.post(base + "/api/predict", json={"text": text}, timeout=30).json()
        edit = httpx.post(base + "/api/intervene", json={"text": text, "set": {"food": "Positive"}}, timeout=30).json()
        assert [c["name"] for c in pred["concepts"]] == ["food", "ambiance", "service", "noise"]
        import sparsecbm

        ref = intervene(sparsecbm.load(serve_ckpts["dense"]), text, {"food": "Positive"})
        labels = list(ref.before.label_probs)
        assert pred["label_probs"] == pytest.approx([ref.before.label_probs[v] for v in labels], abs=1e-6)
        assert edit["after"]["label_probs"] == pytest.approx([ref.after.label_probs[v] for v in labels], abs=1e-6)
        assert httpx.get(base + "/api/examples", timeout=30).json()["total"] == 32  # the smoke run's data.limit.test
        # Ctrl+C with a kept-alive connection open and the Dataset pass started: one line, exit 0, in < 2 s
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/api/dataset").status_code in (200, 202)
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            seconds = time.monotonic() - start
        assert proc.returncode == 0 and out.strip().splitlines() == ["sparsecbm explorer: stopped"], (out, err)
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        assert seconds < 2, seconds
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(20)


def test_cli_user_error_exits_2_with_one_line(tmp_path):
    r = subprocess.run(serve_cmd(tmp_path, f"ckpt_path={tmp_path}/missing.ckpt"), cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith(f"error: checkpoint not found: {tmp_path}/missing.ckpt; expected ckpt_path=")
    assert lines[-1] == "(for the full traceback add debug=true or set HYDRA_FULL_ERROR=1)"
    assert "Traceback" not in r.stderr


def test_build_errors(serve_ckpts, tmp_path):
    ckpt = serve_ckpts["dense"]
    with pytest.raises(ServeError, match=r"data.root=/nowhere: .*/nowhere"):
        build(compose_cfg(tmp_path, [f"ckpt_path={ckpt}", "data.root=/nowhere"], "serve"))
    with pytest.raises(ConfigError, match="split='validation' is not valid"):
        build(compose_cfg(tmp_path, [f"ckpt_path={ckpt}", "split=validation"], "serve"))
    with pytest.raises(ServeError, match="ckpt_path=... is required"):
        build(compose_cfg(tmp_path, [], "serve"))
    # data=<name> with data.root: another data config of the same concepts
    explorer, compare = build(compose_cfg(tmp_path, [f"ckpt_path={ckpt}", "data=cebab", f"data.root={TINY_DATA}",
                                                     "split=dev", f"compare_ckpt_path={ckpt}"], "serve"))
    assert explorer.split == "dev" and len(explorer.dm.raw["dev"]) > 0 and compare is not None


def test_standard_model_is_refused(tmp_path):
    from sparsecbm.interpret.intervention import InterventionError
    from sparsecbm.train import train

    train(compose_cfg(tmp_path / "run", ["experiment=smoke", *TINY_BERT, "cbm=standard", "test=false"]))
    with pytest.raises(InterventionError, match="'standard' model without concepts"):
        build(compose_cfg(tmp_path, [f"ckpt_path={tmp_path}/run/checkpoints/best.ckpt"], "serve"))


def test_bind_and_host_warning():
    sock = bind("127.0.0.1", free_port())
    try:
        with pytest.raises(ServeError, match=r"cannot listen on 127.0.0.1:\d+ .*pick another port"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
    for port in (0, 70000, "80"):
        with pytest.raises(ServeError, match="port="):
            bind("127.0.0.1", port)
    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None
    assert "reachable from other machines" in host_warning("0.0.0.0")
    assert url("::1", 8765) == "http://[::1]:8765/"


def test_bench_writes_json(serve_ckpts, tmp_path):
    from sparsecbm.serve.bench import run as bench

    out = bench(compose_cfg(tmp_path, [f"ckpt_path={serve_ckpts['sparse']}", "bench.texts=3", "bench.edits=2",
                                       "bench.mask_texts=2", "bench.warmup=1", "bench.dataset=true"], "serve"))
    import json

    saved = json.loads((tmp_path / "serve_bench.json").read_text())
    assert saved["texts"] == 3 and saved["edits_per_text"] == 2 and saved["model"]["sparse"] is True
    assert saved["ms"]["edit_server"]["n"] == 6 and saved["ms"]["mask_edit"]["n"] == 2
    assert saved["ms"]["forward"]["n"] == saved["ms"]["new_text_server"]["n"] == 3
    ratio = saved["ms"]["new_text_server"]["median"] / saved["ms"]["forward"]["median"]
    assert saved["targets"]["new_text_over_forward"]["value"] == pytest.approx(ratio)
    assert saved["targets"]["edit_server_ms"]["met"] == (saved["ms"]["edit_server"]["median"] <= 50)
    assert out["ratios"]["new_text_server_over_forward"] == pytest.approx(ratio)
    d = saved["dataset"]  # the Dataset view's background pass over the 32 test examples
    assert d["examples"] == 32 and d["seconds"] > 0 and 0 < d["lock_ms_max"] <= 1000 * d["seconds"]
    during = d["predict_during_pass"]
    if during is not None:  # predictions sent while it ran (none when the pass ends first)
        assert saved["targets"]["predict_during_dataset_ms"]["value"] == during["max"]
