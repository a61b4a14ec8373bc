"""``data=annotated``: a folder that carries its own ``concepts.yaml`` — the schema's round trip and its
errors, graded values through loading and metrics, and training, evaluation and a level intervention
end to end on a small annotated folder (tiny BERT)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from testkit import TINY_BERT, compose_cfg
from testkit.annotated import LABEL

from sparsecbm.data.loading import DataError
from sparsecbm.data.schema import SCHEMA_FILE, FolderSchema, annotated_datamodule, read_schema


def copy(folder: Path, to: Path, edit=None) -> Path:
    shutil.copytree(folder, to)
    if edit is not None:
        d = yaml.safe_load((to / SCHEMA_FILE).read_text())
        edit(d)
        (to / SCHEMA_FILE).write_text(yaml.safe_dump(d, sort_keys=False))
    return to


def test_schema_round_trip(annotated, tmp_path):
    schema = read_schema(annotated)
    assert [c["name"] for c in schema.concepts] == ["food", "food_grade", "staff"]
    assert schema.sources == {"food": "human", "food_grade": "machine", "staff": "machine"}
    grade = schema.concept_set()["food_grade"]
    assert grade.ordered and grade.levels == ("1", "2", "3", "4", "5") and grade.unordered == ("unknown",)
    # written again (to_dict -> save) and read back: the same schema, the same concept set
    other = copy(annotated, tmp_path / "again")
    (other / SCHEMA_FILE).unlink()
    schema.save(other)
    back = read_schema(other)
    assert back.to_dict() == schema.to_dict() and back.concept_set() == schema.concept_set()
    # FolderSchema by hand: defaults fill in the files and the source
    hand = FolderSchema("description", LABEL, [{"name": "food", "column": "food_aspect_majority",
                                               "values": ["Negative", "Positive", "unknown"]}])
    assert hand.to_dict()["files"] == {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}
    assert hand.to_dict()["concepts"][0]["source"] == "human"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["concepts"][2].update(column="staff_opinion"),
     r"concepts.yaml: concept 'staff' names column 'staff_opinion', which .*train.csv does not have; its columns are"),
    (lambda d: d.update(text_column="review"), r"concepts.yaml: text_column names column 'review', which"),
    (lambda d: d["concepts"][0].update(colour="red"), r"concepts.yaml: concept 'food': unknown field\(s\) \['colour'\]"),
    (lambda d: d["concepts"][2].update(unordered=["unknown"]), r"concept 'staff': 'unordered' needs ordered: true"),
    (lambda d: d["concepts"][1].update(unordered=["missing"]),
     r"concept 'food_grade': unordered value\(s\) \['missing'\] are not in its values"),
    (lambda d: d["concepts"][0].update(source="crowd"), r"concept 'food': source 'crowd' is not one of"),
    (lambda d: d.update(labels=d.pop("label")), r"unknown top-level field\(s\) \['labels'\]"),
    (lambda d: d["label"].pop("values"), r"'label' needs 'column' and 'values'"),
    (lambda d: d["concepts"][1].update(values="1,2,3"), r"concept 'food_grade': 'values' must be a list"),
], ids=["unknown-column", "unknown-text-column", "unknown-field", "unordered-without-order", "stray-unordered",
        "bad-source", "unknown-top-level", "label-values", "values-not-a-list"])
def test_schema_errors_name_file_field_and_value(annotated, tmp_path, edit, message):
    folder = copy(annotated, tmp_path / "f", edit)
    with pytest.raises(DataError, match=message) as e:
        read_schema(folder)
    assert str(folder / SCHEMA_FILE) in str(e.value)


def test_value_outside_the_set_names_file_line_column_and_value(annotated, tmp_path):
    folder = copy(annotated, tmp_path / "f")
    with open(folder / "dev.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index("machine_food_grade")] = "7"
    with open(folder / "dev.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    dm = annotated_datamodule(str(folder), tokenizer="minilm")
    with pytest.raises(DataError, match=r"dev.csv, line 2, column 'machine_food_grade' \(concept 'food_grade'\): "
                                        r"value '7' is not known; expected one of \['1', '2', '3', '4', '5', 'unknown'\]"):
        dm.setup()
    with pytest.raises(DataError, match=r"data=annotated reads a folder that carries its own concepts.yaml"):
        read_schema(tmp_path)


def test_graded_values_load_in_level_order(annotated):
    dm = annotated_datamodule(str(annotated), tokenizer="minilm")
    dm.setup()
    cs = dm.concept_set
    k = cs.position("food_grade")
    rows = [r for r in csv.DictReader(open(annotated / "train.csv")) if r["review_majority"] != "no majority"]
    raw = [r["machine_food_grade"] for r in rows]
    idx = [c[k] for c in dm.raw["train"].concepts]
    assert [cs["food_grade"].values[i] for i in idx] == raw
    assert [cs["food_grade"].rank(i) for i in idx] == [None if v == "unknown" else int(v) - 1 for v in raw]
    assert {v for v in raw} - {"unknown"}  # some texts were graded


def test_mae_metric_on_graded_concepts(annotated):
    from sparsecbm.lit.metrics import CBMMetrics

    cs = read_schema(annotated).concept_set()
    m = CBMMetrics(cs)
    onehot = lambda p, n: torch.nn.functional.one_hot(torch.tensor(p), n).float()  # noqa: E731
    # food_grade values: '1'..'5' = 0..4, unknown = 5. pairs (pred, true): (1,1) (5,2) (unknown,3) (2,unknown) (4,1)
    pred, true = [0, 4, 5, 1, 3], [0, 1, 2, 5, 0]
    concepts = torch.tensor([[2, t, 2] for t in true])
    m.update(onehot([0] * 5, 5), torch.zeros(5, dtype=torch.long),
             [onehot([2] * 5, 3), onehot(pred, 6), onehot([2] * 5, 3)], concepts)
    out = m.compute("test")
    assert out["test/concept/food_grade/mae"] == pytest.approx((0 + 3 + 3) / 3)  # only level-vs-level pairs
    assert "test/concept/food/mae" not in out and "test/concept/staff/mae" not in out


@pytest.mark.parametrize("cbm", ["strict", "cem"])
def test_data_annotated_trains_end_to_end(annotated, tmp_path, cbm):
    """``bash run.sh experiment=smoke data=annotated data.root=DIR cbm=...``, then a level intervention."""
    from sparsecbm.intervene import run as intervene
    from sparsecbm.train import train

    results, _ = train(compose_cfg(tmp_path, ["experiment=smoke", *TINY_BERT, "data=annotated",
                                              f"data.root={annotated}", f"cbm={cbm}"]))
    saved = json.loads((tmp_path / "results.json").read_text())
    per = saved["test"]["per_concept"]
    assert set(per) == {"food", "food_grade", "staff"} and "mae" in per["food_grade"]
    assert 0 <= per["food_grade"]["mae"] <= 4 and saved["test"]["label"]["acc"] >= 0
    assert saved["test"]["bottleneck"]["n_examples"] == results["test"]["bottleneck"]["n_examples"] > 0
    if cbm == "strict":
        assert saved["test"]["bottleneck"]["leakage"]["acc"] == pytest.approx(0.0)
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    out = tmp_path / "iv"
    res = intervene(compose_cfg(out, [f"ckpt_path={ckpt}", "text='The pasta was perfect.'",
                                      "set={food_grade: 4, staff: Negative}"], "intervene"))
    assert res.after.concepts["food_grade"] == "4" and res.after.concepts["staff"] == "Negative"
    curve = intervene(compose_cfg(tmp_path / "curve", [f"ckpt_path={ckpt}", f"data.root={annotated}",
                                                       "split=test", "random_seeds=1"], "intervene"))
    gt = saved["test"]["intervention"]["all_ground_truth"]["acc"]
    assert all(pts[-1].acc == pytest.approx(gt) for pts in curve.curves.values())
