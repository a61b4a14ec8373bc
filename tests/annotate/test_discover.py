"""Concept discovery on constructed data sets: a concept that determines the label is ranked first (a
bank concept, and a sentence cluster no bank concept covers); the written bank loads and annotates."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from testkit.corpus import BANK, SENT, make_corpus

from sparsecbm.annotate import annotate_folder, load_bank
from sparsecbm.annotate.bank import ConceptBank
from sparsecbm.annotate.discover import discover, greedy_selection
from sparsecbm.concepts import ConceptSpec

WORDS = ["food", "tasty", "bland", "service", "friendly", "rude", "weather", "parking", "easy", "impossible",
         "monday", "nice"]
LABEL = {"column": "label", "values": ["bad", "good"], "skip": []}


class Words:
    """Bag of words over ``WORDS``, L2-normalised (deterministic, no model)."""

    name = path = "fake-words"

    def embed(self, texts, description=""):
        out = np.zeros((len(texts), len(WORDS)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                if w in WORDS:
                    out[i, WORDS.index(w)] += 1
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norm == 0, 1, norm)


def parking_corpus(root: Path, n: int = 30) -> None:
    """The label is decided by parking, which no bank concept covers; food and service are noise."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test"):
        rows = []
        for i in range(n):
            good = i % 2 == 0
            food, service = rng.choice(["Negative", "Positive"]), rng.choice(["Negative", "Positive"])
            parking = "Parking was easy." if good else "Parking was impossible."
            text = " ".join(["We went on Monday.", SENT["food"][food], parking, SENT["service"][service]])
            rows.append({"text": text, "label": "good" if good else "bad", "food_h": food})
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def test_a_bank_concept_that_determines_the_label_is_ranked_first(tmp_path):
    make_corpus(tmp_path / "data")  # label = (food is Positive)
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", "text", LABEL, human,
                    embedder=Words(), calibration="threshold")
    report = discover(tmp_path / "out", ConceptBank.from_dict(BANK), Words(), clusters=4, candidates=4,
                      max_concepts=3, seed=0)
    assert report.steps[0].concept == "food" and report.steps[0].ceiling_f1 == pytest.approx(1.0)
    assert report.steps[0].gain_f1 > 0.4 and report.baseline["f1"] < 0.5
    assert [s.step for s in report.steps] == [1, 2, 3]
    assert all(s.gain_f1 == pytest.approx(0.0) for s in report.steps[1:])  # nothing left to gain
    # the written bank: the food concept first, loadable as bank=PATH
    bank = load_bank(report.bank_file)
    assert bank.concepts[0].name == "food" and {"food", "service"} <= {c.name for c in bank.concepts}
    table = (tmp_path / "out" / "discovery" / "ranking.csv").read_text().splitlines()
    assert table[0].startswith("step,concept,source") and table[1].split(",")[1] == "food"
    assert "| 1 | food | human | 100.0 |" in (tmp_path / "out" / "discovery" / "ranking.md").read_text()


def test_a_label_deciding_cluster_becomes_the_first_candidate(tmp_path):
    parking_corpus(tmp_path / "data")
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    bank = ConceptBank.from_dict(BANK)
    annotate_folder(tmp_path / "data", bank, tmp_path / "out", "text", LABEL, human, embedder=Words(),
                    calibration="threshold")
    report = discover(tmp_path / "out", bank, Words(), clusters=6, candidates=6, max_concepts=2, seed=0)
    first = report.steps[0]
    assert first.source == "candidate" and first.ceiling_f1 == pytest.approx(1.0)
    cand = next(c for c in report.candidates if c["name"] == first.concept)
    assert cand["kept"] and all("parking" in p.lower() for ps in cand["values"].values() for p in ps)
    assert set(cand["values"]) <= {"leans_good", "leans_bad"}
    written = load_bank(report.bank_file)
    assert written.concepts[-1].name == first.concept  # after the bank's own concepts
    # the proposed bank annotates the data: its candidate's value decides the label on test
    res = annotate_folder(tmp_path / "data", written, tmp_path / "again", "text", LABEL, embedder=Words(),
                          default_tau=0.75)
    rows = list(csv.DictReader(open(tmp_path / "again" / "test.csv")))
    pairs = {(r[f"machine_{first.concept}"], r["label"]) for r in rows}
    assert len(pairs) == len({v for v, _ in pairs}) == 2
    assert res.sizes["test"] == 30


def test_greedy_selection_order_and_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    noise = rng.integers(0, 3, 200)
    half = np.where(rng.random(200) < 0.5, y, 2)  # reveals the label on half the rows
    pool = [("noise", "machine", noise, noise, 3), ("half", "machine", half, half, 3), ("copy", "human", y, y, 2),
            ("copy2", "candidate", y, y, 2)]
    steps, base = greedy_selection(pool, y, y, 2, max_concepts=4)
    assert [s.concept for s in steps][:1] == ["copy"]  # the tie with copy2 keeps pool order
    assert steps[0].ceiling_f1 == pytest.approx(1.0) and base["f1"] < 0.5
    assert len(steps) == 4 and steps[0].gain_f1 == pytest.approx(1.0 - base["f1"])


def test_cli_discover_and_llm_need_their_options(tmp_path):
    make_corpus(tmp_path / "data", n=6)
    r = subprocess.run([sys.executable, "-m", "sparsecbm.annotate", "data=csv", f"data.root={tmp_path / 'data'}",
                        "data.text_column=text", "data.label.column=label", "data.label.values=[bad,good]",
                        "bank=cebab", "annotator=llm", f"out_dir={tmp_path / 'o'}", f"hydra.run.dir={tmp_path / 'h'}"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "annotator=llm needs backbone.name_or_path" in r.stderr, r.stderr[-2000:]


def test_the_embedding_bound_reads_the_label_from_the_annotators_own_embeddings():
    """The label linearly read from each text's mean sentence embedding: 1.0 when a word the embedder
    sees decides it, chance level when the label is unrelated to the text."""
    from sparsecbm.annotate.discover import embedding_bound

    texts = [f"We went on Monday. Parking was {'easy' if i % 2 else 'impossible'}." for i in range(40)]
    y = np.arange(40) % 2
    bound = embedding_bound(texts[:20], y[:20], texts[20:], y[20:], Words(), 2)
    assert bound["f1"] == pytest.approx(1.0) and bound["acc"] == pytest.approx(1.0) and bound["C"] in (0.01, 0.1, 1.0)
    noise = embedding_bound(["We went on Monday."] * 20, y[:20], ["We went on Monday."] * 20, y[20:], Words(), 2)
    assert noise["acc"] == pytest.approx(0.5)  # the same text for both labels: nothing to read
    assert embedding_bound(texts[:4], np.zeros(4, int), texts[4:8], np.zeros(4, int), Words(), 2) == {}


def test_discovery_reports_the_embedding_bound(tmp_path):
    parking_corpus(tmp_path / "data")
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", "text", LABEL, human,
                    embedder=Words(), calibration="threshold")
    report = discover(tmp_path / "out", ConceptBank.from_dict(BANK), Words(), clusters=4, candidates=0, seed=0)
    # parking decides the label and the embedder sees it, though no bank concept covers it
    assert report.embedding_bound["f1"] == pytest.approx(1.0) and report.all_data_concepts["f1"] < 0.9
    assert "Label read linearly from the annotator's own text embedding (no concepts): 100.0" in \
        (tmp_path / "out" / "discovery" / "ranking.md").read_text()
    import json

    saved = json.loads((tmp_path / "out" / "discovery" / "discovery.json").read_text())
    assert saved["embedding_bound"]["f1"] == pytest.approx(1.0)
