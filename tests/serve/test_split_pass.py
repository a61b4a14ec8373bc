"""The Dataset view's pass over the split runs in the background: progress at once, then the results, and a
prediction never waits for the whole pass (only for the chunk in flight)."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from sparsecbm.serve import Explorer, Limits
from sparsecbm.serve.app import create_app
from sparsecbm.serve.split_pass import ModelLock
from sparsecbm.session import InferenceSession


def slowed(ckpt, seconds: float, batch_size: int):
    """A client over a model whose backbone sleeps ``seconds`` per forward (the pass and predictions alike),
    its pass reading ``batch_size`` examples per chunk."""
    session = InferenceSession.load(ckpt)
    explorer = Explorer(session, session.datamodule(), limits=Limits(split_batch_size=batch_size))
    explorer.model.backbone.model.register_forward_hook(lambda *_: time.sleep(seconds))
    return TestClient(create_app(explorer)), explorer


def test_progress_states_then_the_results(serve_ckpts):
    client, ex = slowed(serve_ckpts["dense"], 0.05, 4)  # 8 chunks of 4
    r = client.get("/api/dataset")
    assert r.status_code == 202
    first = r.json()
    assert first["status"] == "running" and first["total"] == 32 and 0 <= first["done"] < 32
    # the other split views report the same pass
    curves = client.get("/api/curves")
    assert curves.status_code == 202 and curves.json()["status"] == "running"
    wrong = client.get("/api/examples", params={"wrong_label": "true"})
    assert wrong.status_code == 202 and wrong.json()["examples"] == [] and wrong.json()["matched"] is None
    plain = client.get("/api/examples")  # filters without predictions do not wait
    assert plain.status_code == 200 and plain.json()["matched"] == 32 and "predicted" not in plain.json()["examples"][0]
    seen = [first["done"]]
    while (r := client.get("/api/dataset")).status_code == 202:
        seen.append(r.json()["done"])
        time.sleep(0.02)
    assert seen == sorted(seen) and all(n % 4 == 0 for n in seen)  # whole chunks, never going back
    d = r.json()
    assert r.status_code == 200 and d["status"] == "done" and d["done"] == d["total"] == d["n"] == 32
    # the chunked pass gives the numbers of one pass over the whole split
    whole = ex.session.collect(ex.dm.loader("test"))
    assert d["task"]["acc"] == pytest.approx(
        float((whole.label_logits.argmax(-1) == whole.labels).float().mean()), abs=1e-9)
    sp = ex.split_pass().result
    assert torch.equal(sp["labels"], whole.labels) and torch.equal(sp["truth"], whole.truth)
    assert client.get("/api/curves").status_code == 200
    assert client.get("/api/examples", params={"wrong_label": "true"}).json()["status"] == "done"
    assert ex.split_pass().progress()["lock_ms_max"] >= 50  # it held the lock for a chunk's forward


def test_predict_stays_responsive_while_the_pass_runs(serve_ckpts):
    """The pass takes >= 16 x 0.3 s; a prediction (0.3 s of its own) waits at most for one chunk."""
    client, ex = slowed(serve_ckpts["dense"], 0.3, 2)
    assert client.get("/api/dataset").status_code == 202
    job = ex.split_pass()
    while job.done < 4:
        time.sleep(0.02)
    waits = []
    for i in range(3):
        start = time.perf_counter()
        r = client.post("/api/predict", json={"text": f"A new text number {i} about cold soup."})
        waits.append(time.perf_counter() - start)
        assert r.status_code == 200
    assert job.status == "running" and job.done < job.total, "the pass ended before the predictions were timed"
    assert max(waits) < 1.0, waits
    assert job.wait(120) and job.lock_ms_max < 1000


def test_a_failed_pass_reports_why_and_starts_again(serve_ckpts):
    client, ex = slowed(serve_ckpts["dense"], 0.0, 8)
    boom = ex.model.backbone.model.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("disk gone")))
    r = client.get("/api/dataset")
    ex.split_pass().wait(60)
    r = client.get("/api/curves")
    assert r.status_code == 500 and r.json()["status"] == "error" and "disk gone" in r.json()["detail"]
    boom.remove()
    assert client.get("/api/dataset").status_code == 202  # started again
    assert ex.split_pass().wait(60) and client.get("/api/dataset").json()["n"] == 32


def test_waiting_requests_go_before_the_background():
    """A background loop that releases and retakes the lock at once lets a waiting request in after at most
    the chunk in flight (Python's own locks would let the loop win again and again)."""
    lock, chunks, stop = ModelLock(), [], threading.Event()

    def background():
        while not stop.is_set():
            with lock.background():
                time.sleep(0.02)
                chunks.append(1)

    thread = threading.Thread(target=background)
    thread.start()
    try:
        for _ in range(5):
            while len(chunks) < 2:
                time.sleep(0.005)
            before = len(chunks)
            with lock:
                ran = len(chunks) - before
            assert ran <= 1
    finally:
        stop.set()
        thread.join(5)
