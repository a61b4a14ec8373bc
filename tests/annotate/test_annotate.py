"""Machine concept annotation: sentence splitting, scoring and calibration on a constructed corpus whose
concepts are known (a deterministic fake embedder: one axis per word), the written folder and its schema."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from testkit.corpus import BANK, make_corpus

from sparsecbm.annotate import annotate_folder, load_bank, split_sentences
from sparsecbm.annotate.bank import BankError, ConceptBank
from sparsecbm.concepts import ConceptSpec
from sparsecbm.data.schema import read_schema

WORDS = ["food", "tasty", "bland", "service", "friendly", "rude", "weather", "the", "was", "and"]


class WordEmbedder:
    """Bag of words over ``WORDS``, L2-normalised: cosine similarity = word overlap (deterministic)."""

    name = path = "fake-words"

    def __init__(self):
        self.calls = 0

    def embed(self, texts, description=""):
        self.calls += 1
        out = np.zeros((len(texts), len(WORDS)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                if w in WORDS:
                    out[i, WORDS.index(w)] += 1
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norm == 0, 1, norm)


def test_split_sentences():
    assert split_sentences("Dr. Smith ate at 8.30 p.m. The food was great! Service, slow.") == [
        "Dr. Smith ate at 8.30 p.m.", "The food was great!", "Service, slow."]
    assert split_sentences("  no   punctuation here ") == ["no punctuation here"]
    assert split_sentences("") == []
    long = "word, " * 200
    pieces = split_sentences(long, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and len(pieces) > 5


def test_bank_shipped_and_errors(tmp_path):
    bank = load_bank("cebab")
    human = [c.name for c in bank.concepts if c.human_column]
    assert human == ["food", "ambiance", "service", "noise"] and len(bank) - len(human) >= 10
    assert len(load_bank("imdb")) >= 8
    assert load_bank("cebab").digest() == bank.digest()
    with pytest.raises(BankError, match="neither a YAML file nor a shipped bank"):
        load_bank("nope")
    with pytest.raises(BankError, match="concept 'x', value 'Positive': needs at least one"):
        ConceptBank.from_dict({"concepts": [{"name": "x", "values": {"Positive": []}}]}, "b.yaml")
    with pytest.raises(BankError, match="levels=5 needs exactly two polar values"):
        ConceptBank.from_dict({"concepts": [{"name": "x", "levels": 5, "values": {"a": ["p"], "b": ["q"], "c": ["r"]}}]})
    path = bank.save(tmp_path / "b.yaml")
    assert load_bank(path).digest() == bank.digest()


def test_annotation_finds_known_values_and_calibrates(tmp_path):
    rows = make_corpus(tmp_path / "data")
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    emb = WordEmbedder()
    res = annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", text_column="text",
                          label={"column": "label", "values": ["bad", "good"], "skip": []}, human=human,
                          embedder=emb, calibration="threshold")
    # food has human labels: calibrated on dev, perfect agreement on every split
    assert res.decisions["food"]["kind"] == "threshold" and res.decisions["food"]["split"] == "dev"
    for split in ("train", "dev", "test"):
        assert res.agreement[split]["food"]["macro_f1"] == pytest.approx(1.0)
        assert res.agreement[split]["food"]["kappa"] == pytest.approx(1.0)
    # service has none: the documented rule (median of the calibrated thresholds)
    assert res.decisions["service"]["kind"] == "rule"
    assert res.decisions["service"]["tau"] == pytest.approx(res.decisions["food"]["tau"])
    out = {s: list(csv.DictReader(open(tmp_path / "out" / f"{s}.csv"))) for s in ("train", "dev", "test")}
    for split in out:  # human columns kept, machine columns added, right values, unknown when nothing matches
        assert [r["food_h"] for r in out[split]] == [r["food_h"] for r in rows[split]]
        assert [r["machine_service"] for r in out[split]] == [r["service_truth"] for r in rows[split]]
        assert [r["machine_food"] for r in out[split]] == [r["food_h"] for r in rows[split]]
        grades = [r["machine_food_grade"] for r in out[split]]
        assert {g for g, r in zip(grades, rows[split]) if r["food_h"] == "unknown"} == {"unknown"}
    schema = read_schema(tmp_path / "out")
    assert schema.sources == {"food": "human", "service": "machine", "food_grade": "machine"}
    cs = schema.concept_set()
    assert cs["food_grade"].ordered and cs["food_grade"].levels == ("1", "2", "3")
    saved = json.loads((tmp_path / "out" / "annotation.json").read_text())
    assert saved["provenance"]["bank_sha256"] == ConceptBank.from_dict(BANK).digest()
    assert set(saved["decisions"]) == {"food", "service"}


def test_threshold_calibration_moves_with_labels(tmp_path):
    """Labels that call a weak match 'unknown' push tau above it; labels that accept it keep tau below."""
    from sparsecbm.annotate.scoring import ConceptScores, calibrate_threshold

    rel = np.array([0.9, 0.9, 0.6, 0.6, 0.3, 0.3])
    best = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.1], [0.1, 0.6], [0.3, 0.0], [0.0, 0.3]])
    sc = ConceptScores(rel, best, best, best, best, np.zeros(6, int), best[:, 1] - best[:, 0])
    strict = calibrate_threshold(sc, np.array([0, 1, 2, 2, 2, 2]))
    loose = calibrate_threshold(sc, np.array([0, 1, 0, 1, 2, 2]))
    assert 0.6 < strict.tau <= 0.9 and 0.3 < loose.tau <= 0.6
    assert list(strict.decide(sc)) == [0, 1, 2, 2, 2, 2] and list(loose.decide(sc)) == [0, 1, 0, 1, 2, 2]


def test_real_minilm_on_a_handful_of_sentences(tmp_path):
    from sparsecbm.annotate.embed import SentenceEmbedder
    from sparsecbm.annotate.scoring import score_texts

    bank = ConceptBank.from_dict({"concepts": [
        {"name": "food", "values": {"Negative": ["the food was bland and tasteless"],
                                    "Positive": ["the food was delicious"]}}]})
    texts = ["We parked outside. The pasta was incredibly tasty!", "We parked outside. My soup was cold and flavourless."]
    emb = SentenceEmbedder("minilm", cache_dir=tmp_path / "cache", progress=False)
    sc = score_texts(texts, bank, emb)["food"]
    assert list(sc.sentence) == [1, 1]  # the sentence about food, not the parking one
    assert sc.polarity()[0] > 0 > sc.polarity()[1]
    assert list(emb._cache) and (tmp_path / "cache").is_dir()  # cached on disk
    again = SentenceEmbedder("minilm", cache_dir=tmp_path / "cache", progress=False)
    one = ["The pasta was incredibly tasty!"]
    assert np.allclose(again.embed(one), emb.embed(one)) and again._model is None  # from the cache


def test_annotate_cli_exit_code_2(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "sparsecbm.annotate", f"data.root={tmp_path}", "bank=nope",
                        f"out_dir={tmp_path / 'o'}", f"hydra.run.dir={tmp_path / 'h'}"], capture_output=True, text=True)
    assert r.returncode == 2 and "bank='nope'" in r.stderr and "Traceback" not in r.stderr


def test_probe_calibration_reads_the_embeddings(tmp_path):
    """calibration=probe: a linear probe on the sentence embeddings, fitted on dev. On the toy corpus it finds
    the right values; when the human labels follow words no value phrase has (here: food is labelled by the
    service sentence), it still learns them, where the similarity-threshold calibration cannot."""
    rows = make_corpus(tmp_path / "data", n=36)
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    label = {"column": "label", "values": ["bad", "good"], "skip": []}
    res = annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", text_column="text",
                          label=label, human=human, embedder=WordEmbedder(), calibration="probe")
    assert res.decisions["food"]["kind"] == "probe" and res.decisions["food"]["cv_folds"] == 5
    assert res.decisions["food"]["C"] in (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)
    assert res.agreement["test"]["food"]["macro_f1"] == pytest.approx(1.0)
    assert res.decisions["service"]["kind"] == "rule"  # no human labels: the rule, as with the other calibrations

    for split, split_rows in rows.items():  # relabel food by the service sentence
        for r in split_rows:
            r["food_h"] = r["service_truth"]
        with open(tmp_path / "data" / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(split_rows[0]))
            w.writeheader()
            w.writerows(split_rows)
    scores = {}
    for kind in ("threshold", "probe"):
        r = annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / kind, text_column="text",
                            label=label, human=human, embedder=WordEmbedder(), calibration=kind)
        scores[kind] = r.agreement["test"]["food"]["macro_f1"]
    assert scores["threshold"] < 0.7 and scores["probe"] > 0.95, scores


def test_test_split_is_refused_for_calibration_and_discovery(tmp_path):
    import subprocess
    import sys

    from sparsecbm.annotate.discover import discover
    from sparsecbm.errors import ConfigError

    make_corpus(tmp_path / "data")
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    label = {"column": "label", "values": ["bad", "good"], "skip": []}
    with pytest.raises(ConfigError, match="calibration_split=test is refused: the test split must stay unseen"):
        annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", text_column="text",
                        label=label, human=human, embedder=WordEmbedder(), calibration_split="test")
    with pytest.raises(ConfigError, match="calibration_split='valid' is not valid; expected one of"):
        annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", text_column="text",
                        label=label, human=human, embedder=WordEmbedder(), calibration_split="valid")
    with pytest.raises(ConfigError, match="discovery.split=test is refused"):
        discover(tmp_path / "out", ConceptBank.from_dict(BANK), WordEmbedder(), split="test")
    for option in ("calibration_split=test", "discovery.split=test"):  # the CLI: exit 2 before any model loads
        r = subprocess.run([sys.executable, "-m", "sparsecbm.annotate", f"data.root={tmp_path / 'data'}", "bank=cebab",
                            f"out_dir={tmp_path / 'o'}", f"hydra.run.dir={tmp_path / 'h'}", "discover=true", option],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "=test is refused" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_agreement_and_calibration_use_the_projects_macro_f1():
    """A value absent from both the human and the machine labels is left out of the mean (as in training and
    results.json), not scored 0 as scikit-learn's ``labels=range(n)`` did."""
    from sklearn.metrics import f1_score

    from sparsecbm.annotate.annotator import agreement
    from sparsecbm.annotate.scoring import _macro_f1
    from sparsecbm.metrics import macro_f1

    human, machine = [0, 0, 1, 1, 3, 3], [0, 1, 1, 1, 3, 0]  # value 2 of 4 occurs nowhere
    got = agreement(human, machine, 4)["macro_f1"]
    assert got == pytest.approx(macro_f1(machine, human, 4)) == pytest.approx(_macro_f1(human, machine, 4))
    assert got == pytest.approx(f1_score(human, machine, average="macro"))  # the classes that occur
    assert got > f1_score(human, machine, average="macro", labels=[0, 1, 2, 3]) + 0.1


def test_calibration_split_values_are_cross_fitted(tmp_path):
    """calibration=probe fits dev's human labels; dev's own values come from folds it was not fitted on, so with
    labels that follow nothing in the text dev agreement falls to chance while the in-sample fit stays high."""
    rows = make_corpus(tmp_path / "data", n=60)
    rng = np.random.default_rng(0)
    for r in rows["dev"]:
        r["food_h"] = ["Negative", "Positive", "unknown"][int(rng.integers(3))]
    with open(tmp_path / "data" / "dev.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows["dev"][0]))
        w.writeheader()
        w.writerows(rows["dev"])
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    res = annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", text_column="text",
                          label={"column": "label", "values": ["bad", "good"], "skip": []}, human=human,
                          embedder=WordEmbedder(), calibration="probe")
    d = res.decisions["food"]
    assert d["crossfit_folds"] == 5 and res.provenance["calibration_split_crossfit_folds"] == 5
    # in-sample (as before) dev agreement WAS the calibration figure; cross-fitted it is about chance (1/3)
    assert res.agreement["dev"]["food"]["macro_f1"] < d["macro_f1_on_calibration"] - 0.1
    assert res.agreement["dev"]["food"]["macro_f1"] < 0.4
    title = res.table().title
    assert "calibrated on dev; dev values cross-fitted, 5 folds" in title


def test_near_duplicate_groups_keep_edits_together():
    from sparsecbm.annotate.scoring import near_duplicate_groups

    review = "We went there on a date. The steak was cold and the fries were soggy. Service was slow but kind."
    edit = review.replace("cold and the fries were soggy", "perfect and the fries were crisp")
    other = "Lovely patio with a view of the river, the wine list is long and the staff know it well."
    groups, t = near_duplicate_groups([review, other, edit, review.upper(), "ok", "ok"])
    assert t == 0.4 and groups[0] == groups[2] == groups[3] and groups[4] == groups[5]
    assert len({groups[0], groups[1], groups[4]}) == 3
    # templated texts chain into one group at a low threshold: it rises until groups fit the folds (equal texts last)
    templated = [f"the food was {a} and the service was {b}" for a in ("good", "bad") for b in ("good", "bad")] * 3
    groups, t = near_duplicate_groups(templated, max_group=3)
    assert t == 1.0 and len(set(groups)) == 4 and all(len(set(groups[i::4])) == 1 for i in range(4))


def test_cross_fitting_never_splits_a_group():
    from sparsecbm.annotate.scoring import fold_count, fold_splits

    labels = np.array([0, 1, 2] * 20)
    groups = np.repeat(np.arange(12), 5)
    k = fold_count(labels, groups, 5)
    assert k == 5 and fold_count(labels, np.zeros(60, dtype=int), 5) == 1
    for fit, held in fold_splits(labels, groups, k, seed=0):
        assert not set(groups[fit]) & set(groups[held])


def test_copies_of_a_text_do_not_leak_into_its_cross_fitted_value(tmp_path):
    """Dev holds each text several times with ONE random label per text: folds that split the copies let the probe
    read a held-out row's label off its copies (agreement far above chance); grouped folds do not."""
    from sparsecbm.annotate.scoring import crossfit

    rows = make_corpus(tmp_path / "data", n=60)
    rng = np.random.default_rng(0)
    by_text = {}
    for r in rows["dev"]:
        r["food_h"] = by_text.setdefault(r["text"], ["Negative", "Positive", "unknown"][int(rng.integers(3))])
    with open(tmp_path / "data" / "dev.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows["dev"][0]))
        w.writeheader()
        w.writerows(rows["dev"])
    human = [ConceptSpec("food", "food_h", ("Negative", "Positive", "unknown"))]
    scores = {}
    res = annotate_folder(tmp_path / "data", ConceptBank.from_dict(BANK), tmp_path / "out", text_column="text",
                          label={"column": "label", "values": ["bad", "good"], "skip": []}, human=human,
                          embedder=WordEmbedder(), calibration="probe", scores_out=scores)
    assert res.provenance["calibration_split_text_groups"] == len(by_text) == 9
    assert res.provenance["near_duplicate_bigram_jaccard"] >= 0.8  # templated: the threshold rose
    y = np.array([["Negative", "Positive", "unknown"].index(r["food_h"]) for r in rows["dev"]])
    from sparsecbm.annotate.scoring import calibrate_probe
    from sparsecbm.metrics import macro_f1

    leaky, _ = crossfit("probe", scores["dev"]["food"], y, calibrate_probe(scores["dev"]["food"], y))
    assert macro_f1(leaky, y, 3) > 0.9  # the copies give the answer away
    assert res.agreement["dev"]["food"]["macro_f1"] < 0.6
