"""Task metrics on replies and references: labels, JSON, free text and instruction following.

Pure Python apart from two maintained libraries: ``rouge-score`` (ROUGE-L) and ``jsonschema``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ftsdk.evaluation.labels import normalize

#: the confusion-matrix column of replies that are none of the labels
OTHER = "(not a label)"


@dataclass(frozen=True)
class LabelMetrics:
    """Accuracy and macro-F1 of label replies, the rate of replies outside the label set, the confusion matrix."""

    accuracy: float
    macro_f1: float
    invalid_rate: float
    labels: list[str]
    #: ``confusion[i][j]``: examples of gold ``labels[i]`` answered ``labels[j]`` (last column: :data:`OTHER`)
    confusion: list[list[int]]
    f1: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_metrics(predictions: list[str], references: list[str], labels: list[str]) -> LabelMetrics:
    """Compare normalized replies with reference labels; macro-F1 averages the per-label F1 over ``labels``."""
    _same_length(predictions, references)
    canon = {normalize(label): label for label in labels}
    gold = [canon.get(normalize(r), r) for r in references]
    guess = [canon.get(normalize(p), OTHER) for p in predictions]
    columns = [*labels, OTHER]
    confusion = [[0] * len(columns) for _ in labels]
    for g, p in zip(gold, guess):
        if g in labels:
            confusion[labels.index(g)][columns.index(p)] += 1
    f1 = {label: _f1(gold, guess, label) for label in labels}
    return LabelMetrics(
        accuracy=sum(g == p for g, p in zip(gold, guess)) / len(gold),
        macro_f1=sum(f1.values()) / len(f1),
        invalid_rate=guess.count(OTHER) / len(guess),
        labels=list(labels),
        confusion=confusion,
        f1=f1,
    )


def _f1(gold: list[str], guess: list[str], label: str) -> float:
    true_positive = sum(g == p == label for g, p in zip(gold, guess))
    predicted, actual = guess.count(label), gold.count(label)
    if true_positive == 0:
        return 0.0
    precision, recall = true_positive / predicted, true_positive / actual
    return 2 * precision * recall / (precision + recall)


def parse_json(text: str) -> Any:
    """The JSON value of a reply (a fenced ```json block is unwrapped); raises ValueError if it is not JSON."""
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.DOTALL)
    return json.loads(fenced.group(1) if fenced else stripped)


def field_match(predicted: Any, reference: Any) -> float:
    """Fraction of the reference object's top-level fields the prediction has with an equal value (1/0 otherwise)."""
    if isinstance(reference, dict) and reference:
        if not isinstance(predicted, dict):
            return 0.0
        return sum(k in predicted and predicted[k] == v for k, v in reference.items()) / len(reference)
    return float(predicted == reference)


@dataclass(frozen=True)
class JsonMetrics:
    """Valid-JSON rate, exact (parsed) match and mean field-level match of structured replies."""

    valid_rate: float
    exact_match: float
    field_match: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def json_metrics(predictions: list[str], references: list[str]) -> JsonMetrics:
    """Score JSON replies against JSON references (references must parse)."""
    _same_length(predictions, references)
    valid, exact, fields = 0, 0, 0.0
    for prediction, reference in zip(predictions, references):
        gold = parse_json(reference)
        try:
            guess = parse_json(prediction)
        except ValueError:
            continue
        valid += 1
        exact += guess == gold
        fields += field_match(guess, gold)
    count = len(references)
    return JsonMetrics(valid_rate=valid / count, exact_match=exact / count, field_match=fields / count)


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure of each reply against its reference (rouge-score, no stemming)."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]


@dataclass(frozen=True)
class TextMetrics:
    """Exact match (normalized) and mean ROUGE-L of free-text replies."""

    exact_match: float
    rouge_l: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_metrics(predictions: list[str], references: list[str]) -> TextMetrics:
    scores = rouge_l(predictions, references)
    exact = sum(normalize(p) == normalize(r) for p, r in zip(predictions, references))
    return TextMetrics(exact_match=exact / len(references), rouge_l=sum(scores) / len(scores))


def follows(reply: str, *, regex: str | None = None, schema: dict[str, Any] | None = None) -> bool:
    """Whether a reply matches the whole ``regex`` and (parsed as JSON) validates against ``schema``."""
    if regex is not None and re.fullmatch(regex, reply.strip(), flags=re.DOTALL) is None:
        return False
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(parse_json(reply), schema)
        except (ValueError, jsonschema.ValidationError):
            return False
    return True


def _same_length(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("nothing to score")
