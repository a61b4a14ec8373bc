import pytest

from sparsecbm.concepts import ConceptSet, ConceptSpec, LabelSpec


def make_set():
    return ConceptSet.from_config(
        [{"name": "food", "column": "food_col"}, {"name": "noise", "column": "noise_col", "values": ["bad", "good"]}],
        {"column": "stars", "values": [1, 2, 3], "skip": ["no majority"]},
        values=["Negative", "Positive", "unknown"],
        aliases={"no majority": "unknown", "": "unknown"},
    )


def test_mapping_and_aliases():
    cs = make_set()
    food = cs["food"]
    assert [food.index(v) for v in ("Negative", "Positive", "unknown", "no majority", "", None)] == [0, 1, 2, 2, 2, 2]
    assert cs.label.values == ("1", "2", "3")
    assert cs.cardinalities == [3, 2]
    with pytest.raises(KeyError):
        food.index("Meh")
    with pytest.raises(KeyError, match="valid concepts: \\['food', 'noise'\\]"):
        cs.position("price")


def test_round_trip():
    cs = make_set()
    again = ConceptSet.from_dict(cs.to_dict())
    assert again == cs
    assert again.names == ["food", "noise"]


def test_bad_specs():
    with pytest.raises(ValueError, match="names no value"):
        ConceptSpec("food", "c", ("a", "b"), {"x": "z"})
    with pytest.raises(ValueError, match="duplicate concept names"):
        ConceptSet((ConceptSpec("a", "c", ("x", "y")), ConceptSpec("a", "d", ("x", "y"))), LabelSpec("l", ("0", "1")))
