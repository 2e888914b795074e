"""Task metrics against hand-computed values, task detection, the shipped general set and the forgetting verdict."""

from __future__ import annotations

import pytest

from ftsdk.evaluation.forgetting import (
    GeneralItem,
    check_forgetting,
    general_set,
    score_general,
)
from ftsdk.evaluation.metrics import (
    OTHER,
    field_match,
    follows,
    json_metrics,
    label_metrics,
    rouge_l,
    text_metrics,
)
from ftsdk.evaluation.run import detect_task

LABELS = ["billing", "shipping", "sales"]


def test_label_metrics_by_hand():
    gold = ["billing", "billing", "billing", "shipping", "shipping", "sales"]
    said = ["Billing.", "shipping", "no idea", "shipping", "shipping", "billing"]
    m = label_metrics(said, gold, LABELS)
    assert m.accuracy == pytest.approx(3 / 6) and m.invalid_rate == pytest.approx(1 / 6)
    # billing: tp 1, predicted 2, actual 3 -> P 1/2, R 1/3, F1 0.4; shipping: tp 2, predicted 3, actual 2 -> F1 0.8
    assert m.f1 == pytest.approx({"billing": 0.4, "shipping": 0.8, "sales": 0.0})
    assert m.macro_f1 == pytest.approx(0.4)
    assert m.labels + [OTHER] == ["billing", "shipping", "sales", OTHER]
    assert m.confusion == [[1, 1, 0, 1], [0, 2, 0, 0], [1, 0, 0, 0]]
    assert m.as_dict()["macro_f1"] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        label_metrics(["a"], [], LABELS)


def test_json_metrics_and_field_match():
    refs = ['{"team": "billing", "urgent": true}', '{"team": "sales", "urgent": false}', '{"a": 1}', '{"a": 1}']
    said = ['```json\n{"team": "billing", "urgent": true}\n```', '{"team": "sales", "urgent": true}', "not json", "[1]"]
    m = json_metrics(said, refs)
    assert m.valid_rate == 0.75 and m.exact_match == 0.25
    assert m.field_match == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert field_match({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == pytest.approx(1 / 3)
    assert field_match([1, 2], [1, 2]) == 1.0


def test_rouge_l_and_exact_match():
    # LCS of "the cat sat on the mat" / "the cat was on the mat" is 5 tokens of 6: P = R = F = 5/6
    assert rouge_l(["the cat was on the mat"], ["the cat sat on the mat"]) == [pytest.approx(5 / 6)]
    m = text_metrics(["The answer.", "something else"], ["the answer", "a reply"])
    assert m.exact_match == 0.5 and m.rouge_l == pytest.approx(0.5)


def test_follows_regex_and_schema():
    assert follows("billing", regex=r"[a-z]+") and not follows("Billing team", regex=r"[a-z]+")
    schema = {"type": "object", "required": ["team"], "properties": {"team": {"enum": ["billing", "sales"]}}}
    assert follows('{"team": "sales"}', schema=schema)
    assert not follows('{"team": "hr"}', schema=schema) and not follows("sales", schema=schema)


def test_detect_task():
    assert detect_task(["a", "b", "a", "b", "a", "b"]) == "labels"
    assert detect_task(['{"x": 1}', '{"x": 2}']) == "json"
    assert detect_task(["a long free reply here", "another free reply"]) == "text"


def test_shipped_general_set_is_varied_and_checkable():
    items = general_set()
    assert len(items) >= 48 and len({i.id for i in items}) == len(items)
    categories = {i.category for i in items}
    assert len(categories) >= 6 and all(sum(i.category == c for i in items) >= 6 for c in categories)
    assert {i.check for i in items} == {"exact", "contains_any", "regex", "last_number"}


@pytest.mark.parametrize(("check", "answers", "right", "wrong"), [
    ("exact", ["OK"], "ok.", "OK then"),
    ("contains_any", ["Paris"], "The capital is Paris.", "Parisian"),
    ("regex", [r"(?i)^\W*yes\b"], "Yes, it is.", "no, yes"),
    ("last_number", ["1000"], "There are 1,000 grams.", "1000 or 100"),
])
def test_general_checkers(check, answers, right, wrong):
    item = GeneralItem(id="x", category="c", prompt="p", check=check, answers=answers)
    assert item.passes(right) and not item.passes(wrong)


def test_forgetting_flags_a_drop_overall_and_by_category():
    items = [GeneralItem(id=f"{c}{k}", category=c, prompt="p", check="exact", answers=["yes"])
             for c in ("math", "facts") for k in range(4)]
    base = score_general(items, ["yes"] * 8)
    worse = score_general(items, ["no"] * 3 + ["yes"] * 5)  # math lost 3 of 4
    check = check_forgetting(base, worse, threshold=0.2, category_threshold=0.5)
    assert check.drop == pytest.approx(3 / 8) and check.flagged == ["overall", "math"] and check.forgot
    assert "FLAGGED" in check.summary()
    fine = check_forgetting(base, score_general(items, ["yes"] * 7 + ["no"]), threshold=0.2)
    assert not fine.forgot and fine.as_dict()["drop"] == pytest.approx(1 / 8)
