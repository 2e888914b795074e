"""Scoring model replies against references."""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass


def normalize(text: str) -> str:
    """Lower-case, trim whitespace and surrounding punctuation: 'Billing.' matches 'billing'."""
    return text.strip().strip(string.punctuation + " \n").lower()


@dataclass(frozen=True)
class LabelScore:
    """Exact-match accuracy of predicted labels, with the rate of replies outside the label set."""

    accuracy: float
    invalid_rate: float
    count: int
    per_label: dict[str, float]


def score_labels(predictions: list[str], references: list[str]) -> LabelScore:
    """Compare normalized replies with reference labels."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("nothing to score")
    labels = {normalize(r) for r in references}
    hits = Counter()
    totals = Counter(normalize(r) for r in references)
    invalid = 0
    for predicted, reference in zip(predictions, references):
        guess, gold = normalize(predicted), normalize(reference)
        invalid += guess not in labels
        hits[gold] += guess == gold
    return LabelScore(
        accuracy=sum(hits.values()) / len(references),
        invalid_rate=invalid / len(references),
        count=len(references),
        per_label={label: hits[label] / totals[label] for label in sorted(totals)},
    )
