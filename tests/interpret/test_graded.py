"""Graded (ordered) concepts in the intervention policies, in interventions by level or value name, and
in the HTML report (levels in order)."""

from __future__ import annotations

import math

import pytest
import torch

from sparsecbm.concepts import ConceptSet, ConceptSpec
from sparsecbm.interpret.explanation import ConceptExplanation, Explanation, ExplanationSet
from sparsecbm.interpret.html_report import render_html
from sparsecbm.interpret.intervention import InterventionError, parse_set
from sparsecbm.interpret.policies import entropy_uncertainty, get_policy, ordinal_uncertainty
from sparsecbm.interpret.strategies import Bottleneck

LEVELS = ("awful", "poor", "ok", "good", "great")
GRADE = ConceptSpec("food_grade", "g", (*LEVELS, "unknown"), ordered=True, unordered=("unknown",))
PLAIN = ConceptSpec("service", "s", ("Negative", "Positive", "unknown"))


def probs(*rows):
    return torch.tensor(rows, dtype=torch.float)


def test_ordinal_uncertainty_uses_the_order():
    far = [0.5, 0, 0, 0, 0.5, 0]  # half on the lowest, half on the highest level
    near = [0, 0.5, 0.5, 0, 0, 0]  # two neighbouring levels
    sure = [0, 0, 1, 0, 0, 0]
    mentioned = [0.5, 0, 0, 0, 0, 0.5]  # level 1 or not mentioned at all
    u = ordinal_uncertainty(probs(far, near, sure, mentioned), GRADE)
    assert u.tolist() == pytest.approx([1.0, 0.25, 0.0, 1.0])
    e = entropy_uncertainty(probs(far, near))
    assert e[0] == pytest.approx(e[1])  # the entropy cannot tell them apart
    # no unordered value: the spread alone
    five = ConceptSpec("x", "x", LEVELS, ordered=True)
    assert ordinal_uncertainty(probs([0.5, 0, 0, 0, 0.5]), five).tolist() == pytest.approx([1.0])


def bottleneck(concept_probs, cards):
    logits = [p.clamp_min(1e-6).log() for p in concept_probs]
    head = torch.nn.Linear(sum(cards), 2)
    return Bottleneck(logits, head, "probs")


def test_uncertainty_policy_reads_graded_concepts_with_their_order():
    # concept 0 graded, spread over neighbours; concept 1 graded, spread over the extremes;
    # concept 2 unordered, entropy 0.72 of the maximum
    g_near = probs([0, 0.5, 0.5, 0, 0, 0])
    g_far = probs([0.5, 0, 0, 0, 0.5, 0])
    plain = probs([0.7, 0.2, 0.1])
    b = bottleneck([g_near, g_far, plain], [6, 6, 3])
    cs = [GRADE, ConceptSpec("g2", "g2", GRADE.values, ordered=True, unordered=("unknown",)), PLAIN]
    assert get_policy("uncertainty", concepts=cs).order(b).tolist() == [[1, 2, 0]]
    # without the specs every value is a class: both graded concepts tie at log 2 / log 6 < plain's
    plain_scores = get_policy("uncertainty").scores(b)[0].tolist()
    assert plain_scores[0] == pytest.approx(plain_scores[1], abs=1e-4) and plain_scores[0] < plain_scores[2]


def test_oracle_puts_the_larger_level_error_first():
    # both wrong, both sure: concept 0 predicts level 2 for a true 3, concept 1 level 1 for a true 5
    p0, p1, p2 = probs([0, 1, 0, 0, 0, 0]), probs([1, 0, 0, 0, 0, 0]), probs([0, 0, 1, 0, 0, 0])
    cs = [GRADE, ConceptSpec("g2", "g2", GRADE.values, ordered=True, unordered=("unknown",)), GRADE]
    b = bottleneck([p0, p1, p2], [6, 6, 6])
    truth = torch.tensor([[2, 4, 2]])  # concept 2 is right
    assert get_policy("oracle", concepts=cs).order(b, truth).tolist() == [[1, 0, 2]]
    s = get_policy("oracle", concepts=cs).scores(b, truth)[0]
    assert s.tolist() == pytest.approx([1.25, 2.0, 0.0], abs=1e-4)
    # predicting unknown for a level is the largest error
    b2 = bottleneck([probs([0, 0, 0, 0, 0, 1]), p0], [6, 6])
    assert get_policy("oracle", concepts=cs[:2]).scores(b2, torch.tensor([[2, 0]]))[0].tolist() == pytest.approx([2.0, 1.25], abs=1e-4)


def test_influence_and_random_with_more_than_three_values():
    b = bottleneck([probs([0.2, 0.2, 0.2, 0.2, 0.1, 0.1]), probs([0.5, 0.5, 0])], [6, 3])
    with torch.no_grad():
        b.label_head.weight.zero_()
        b.label_head.weight[0, :6] = torch.arange(6.0)  # only the graded concept moves the label
    assert get_policy("influence").order(b).tolist() == [[0, 1]]
    assert sorted(get_policy("random", 3).order(b)[0].tolist()) == [0, 1]


def test_set_a_graded_concept_by_level_or_value_name():
    cs = ConceptSet((GRADE, PLAIN), label=ConceptSet.from_config([], {"column": "y", "values": ["a", "b"]}, []).label)
    by_level = parse_set("{food_grade: 4}", cs)[0]
    by_name = parse_set("{food_grade: good}", cs)[0]
    assert by_level.value == by_name.value == "good" and by_level.probs == [0, 0, 0, 1, 0, 0]
    assert parse_set("{food_grade: unknown}", cs)[0].value == "unknown"
    with pytest.raises(InterventionError, match=r"unknown value '6' for concept 'food_grade'.*level 1\.\.5"):
        parse_set("{food_grade: 6}", cs)
    with pytest.raises(InterventionError, match="unknown value '2' for concept 'service'"):
        parse_set("{service: 2}", cs)  # levels only for graded concepts


def test_report_shows_graded_concepts_as_levels():
    c = ConceptExplanation("food_grade", list(GRADE.values), [0.0, 0.1, 0.1, 0.6, 0.1, 0.1], "good", [0.0, 1.0],
                           true="ok", levels=list(LEVELS))
    plain = ConceptExplanation("service", list(PLAIN.values), [0.2, 0.7, 0.1], "Positive", [0.0, 1.0])
    e = Explanation("nice food", ["nice", "food"], [c, plain], ["a", "b"], [0.4, 0.6], "b", None)
    assert c.level() == 4 and c.level("ok") == 3 and c.level("unknown") is None
    assert math.isclose(c.expected_level(), (0.1 * 2 + 0.1 * 3 + 0.6 * 4 + 0.1 * 5) / 0.9)
    html = render_html(ExplanationSet([e], "lig"))
    assert "level 4 of 5 ('good', 0.60; expected 3.8; true level 3)" in html
    strip = html[html.index('<table class="levels" data-concept="food_grade">'):]
    strip = strip[: strip.index("</table>")]
    cells = strip.split("<td")[1:]
    assert [x.split(">")[1].split("<")[0] for x in cells] == ["1", "2", "3", "4", "5", "unknown"]
    assert 'class="pred"' in cells[3] and "service=Positive" in html  # unordered concepts as before
    again = ExplanationSet.from_dict(ExplanationSet([e], "lig").to_dict())
    assert again.explanations[0].concepts[0].levels == list(LEVELS)
