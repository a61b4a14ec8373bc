"""Counterfactual pairs: reconstruction on a constructed family set, CEBaB's rule from explicit ids, the
data module's section, and the hand-checked sample of real CEBaB test pairs."""

from __future__ import annotations

import json

import pytest
from testkit import CEBAB, FIXTURES

from sparsecbm.concepts import ConceptSet
from sparsecbm.data.counterfactuals import (
    CounterfactualConfig,
    CounterfactualPairs,
    build_pairs,
    families,
    reconstruct_pairs,
)
from sparsecbm.errors import ConfigError

NAMES = ["food", "service"]
CONCEPTS = ConceptSet.from_config([{"name": "food", "column": "food"}, {"name": "service", "column": "service"}],
                                  {"column": "stars", "values": ["1", "2"]}, ["Negative", "Positive", "unknown"],
                                  {"no majority": "unknown"})
CFG = CounterfactualConfig(prefix_chars=25, min_similarity=0.5, min_shared_words=4, window=None)

# family 0: an original, a food edit, a second food edit, a service edit and a FAILED service edit (text
# changed, values not); family 1: an original and a food edit whose opening changed; one unrelated text.
TEXTS = [
    "We came for the tasting menu on a Friday. The pasta was wonderful and the staff were kind.",   # 0 orig
    "We came for the tasting menu on a Friday. The pasta was awful and the staff were kind.",       # 1 food -
    "We came for the tasting menu on a Friday. The staff were kind.",                               # 2 food ?
    "We came for the tasting menu on a Friday. The pasta was wonderful and the staff were rude.",   # 3 serv -
    "We came for the tasting menu on a Friday. The pasta was wonderful and the staff were hmm.",    # 4 failed
    "Great burgers near the stadium, quick and cheap, worth a stop after the game.",                # 5 orig
    "Terrible burgers near the stadium, quick and cheap, not worth a stop after the game.",         # 6 food -
    "Parking was impossible.",                                                                      # 7 alone
]
VALUES = [("Positive", "Positive"), ("Negative", "Positive"), ("unknown", "Positive"), ("Positive", "Negative"),
          ("Positive", "Positive"), ("Positive", "unknown"), ("Negative", "unknown"), ("unknown", "unknown")]


def as_set(pairs: CounterfactualPairs) -> set[tuple[int, int, str, str, str]]:
    return {(p.base, p.counterfactual, p.concept, p.before, p.after) for p in pairs}


def test_families_link_shared_openings_and_similar_texts_only():
    fam = families(TEXTS, CFG)
    assert fam[0] == fam[1] == fam[2] == fam[3] == fam[4]
    assert fam[5] == fam[6] != fam[0]  # linked by word similarity: the openings differ
    assert fam[7] not in (fam[0], fam[5])
    # a window of 1 row keeps the rows 0..4 chained, and cuts nothing else here
    assert families(TEXTS, CounterfactualConfig(window=1, min_shared_words=4)) == fam


def test_reconstruction_pairs_original_and_edits_of_one_concept():
    pairs = reconstruct_pairs(TEXTS, VALUES, NAMES, CFG, "test")
    expected = {
        (0, 1, "food", "Positive", "Negative"), (1, 0, "food", "Negative", "Positive"),
        (0, 2, "food", "Positive", "unknown"), (2, 0, "food", "unknown", "Positive"),
        (1, 2, "food", "Negative", "unknown"), (2, 1, "food", "unknown", "Negative"),  # two food edits
        (0, 3, "service", "Positive", "Negative"), (3, 0, "service", "Negative", "Positive"),
        (5, 6, "food", "Positive", "Negative"), (6, 5, "food", "Negative", "Positive"),
    }
    assert as_set(pairs) == expected
    # never through the failed edit (row 4 holds the original's values) and never across edit types (1-3)
    assert not any(4 in (p.base, p.counterfactual) for p in pairs)
    assert pairs.n_families == 2 and pairs.n_rows == 8 and pairs.source == "reconstructed"
    assert pairs.counts() == {"food": {"Negative->Positive": 2, "Negative->unknown": 1, "Positive->Negative": 2,
                                       "Positive->unknown": 1, "unknown->Negative": 1, "unknown->Positive": 1},
                              "service": {"Negative->Positive": 1, "Positive->Negative": 1}}
    texts, base, cf = pairs.texts()
    assert [texts[i] for i in base] == [p.base_text for p in pairs]
    assert [texts[i] for i in cf] == [p.counterfactual_text for p in pairs]
    assert len(texts) == 6  # rows 0, 1, 2, 3, 5, 6


def test_identical_words_or_unreadable_rows_make_no_pair():
    texts = ["The pasta was wonderful, staff kind and quick.", "The pasta was wonderful, staff kind and quick!"]
    assert len(reconstruct_pairs(texts, [("Positive", "Positive"), ("unknown", "Positive")], NAMES, CFG)) == 0
    assert len(reconstruct_pairs(texts[:1] + ["The pasta was awful, staff kind and quick."],
                                 [None, ("Negative", "Positive")], NAMES, CFG)) == 0


def test_pairs_from_explicit_ids_follow_cebab():
    """Within one original: (original, edit), (edit, original) and edits of one edit_type; a pair whose
    edited concept kept its value is dropped (CEBaB's get_intervention_pairs)."""
    cols = ["text", "stars", "food", "service", "original_id", "is_original", "edit_type", "edit_goal"]
    rows = [
        {"text": "orig", "food": "Positive", "service": "Negative", "original_id": "7", "is_original": True},
        {"text": "food-", "food": "Negative", "service": "Negative", "original_id": "7", "is_original": False,
         "edit_type": "food", "edit_goal": "Negative"},
        {"text": "food?", "food": "no majority", "service": "Negative", "original_id": "7", "is_original": False,
         "edit_type": "food", "edit_goal": "unknown"},
        {"text": "serv=", "food": "Positive", "service": "Negative", "original_id": "7", "is_original": False,
         "edit_type": "service", "edit_goal": "Positive"},  # failed: service unchanged
        {"text": "other", "food": "Positive", "service": "", "original_id": "8", "is_original": True},
    ]
    pairs = build_pairs(cols, rows, CONCEPTS, "text", CounterfactualConfig(), "test")
    assert pairs.source == "ids"
    assert as_set(pairs) == {(1, 0, "food", "Negative", "Positive"), (0, 1, "food", "Positive", "Negative"),
                             (2, 0, "food", "unknown", "Positive"), (0, 2, "food", "Positive", "unknown"),
                             (1, 2, "food", "Negative", "unknown"), (2, 1, "food", "unknown", "Negative")}
    assert {p.goal for p in pairs if p.counterfactual == 2} == {"unknown"}
    assert pairs.n_families == 1


def test_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="unknown data.counterfactuals option"):
        CounterfactualConfig.coerce({"windo": 3})
    with pytest.raises(ConfigError, match="min_similarity"):
        CounterfactualConfig.coerce({"min_similarity": 2})
    with pytest.raises(ConfigError, match=r"\['taste'\] are not concepts"):
        build_pairs(["text", "food", "service"], [{"text": "a", "food": "Positive", "service": "Positive"}],
                    CONCEPTS, "text", CounterfactualConfig(concepts=["taste"]))


def test_save_load_round_trip(tmp_path):
    pairs = reconstruct_pairs(TEXTS, VALUES, NAMES, CFG, "dev")
    back = CounterfactualPairs.load(pairs.save(tmp_path / "pairs.json"))
    assert back.pairs == pairs.pairs and back.counts() == pairs.counts()
    assert back.summary()["n_pairs"] == len(pairs) == 10


def test_datamodule_section(tmp_path, cfg_factory):
    """conf/data/cebab.yaml's section on the tiny counterfactual fixture; data=csv has none."""
    from hydra.utils import instantiate

    cfg = cfg_factory(["backbone=tiny_bert", f"data.root={FIXTURES / 'cebab_tiny_cf'}"])
    dm = instantiate(cfg.data)
    dm.setup()
    test = dm.counterfactual_pairs("test")
    assert test is not None and len(test) > 0 and dm.counterfactual_pairs("train") is None
    assert test is dm.counterfactual_pairs("test")  # built once
    for p in test:
        assert p.before != p.after and p.base_text != p.counterfactual_text
    assert test.settings["source_file"].endswith("cebab_tiny_cf/test.csv")
    assert dm.describe()  # unchanged otherwise
    plain = instantiate(cfg_factory(["backbone=tiny_bert", "data=csv", f"data.root={FIXTURES / 'cebab_tiny'}",
                                     "data.text_column=description", "data.label.column=review_majority",
                                     "data.label.values=[1,2,3,4,5]", "data.label.skip=[no majority]",
                                     "data.concepts=[{name: food, column: food_aspect_majority}]"]).data)
    plain.setup()
    assert plain.counterfactual_pairs("test") is None


CHECKED = json.loads((FIXTURES / "cebab_pairs_checked.json").read_text())


@pytest.mark.skipif(not (CEBAB / "test.csv").is_file(), reason="needs ../shared/data/cebab")
def test_hand_checked_cebab_test_pairs():
    """The 50 pairs of the final sample (all judged correct by a reader) are still reconstructed; none of the
    10 pairs judged wrong in the first rule's sample is; the text prefixes still match."""
    from sparsecbm.data.files import read_table

    table = read_table(CEBAB / "test.csv")
    cs = ConceptSet.from_config([{"name": n, "column": f"{n}_aspect_majority"} for n in
                                 ("food", "ambiance", "service", "noise")],
                                {"column": "review_majority", "values": ["1", "2", "3", "4", "5"]},
                                ["Negative", "Positive", "unknown"], {"no majority": "unknown"})
    pairs = build_pairs(table.columns, table.rows, cs, "description", CounterfactualConfig(), "test")
    found = as_set(pairs)
    key = lambda e: (e["base"], e["counterfactual"], e["concept"], e["before"], e["after"])  # noqa: E731
    final = CHECKED["final"]
    assert len(final) == 50 and all(e["verdict"] == "correct" for e in final)
    assert [e for e in final if key(e) not in found] == []
    wrong = [e for e in CHECKED["first_rule"] if e["verdict"] == "wrong"]
    assert len(wrong) == 10 and [e for e in wrong if key(e) in found] == []
    for e in final + CHECKED["first_rule"]:
        assert table.rows[e["base"]]["description"].startswith(e["base_prefix"])
        assert table.rows[e["counterfactual"]]["description"].startswith(e["counterfactual_prefix"])
    assert pairs.n_families == 270 and len(pairs) == 3546
