"""The forgetting check: a small general-purpose set with checkable answers, asked of the base and the tuned model.

The set (``data/forgetting.jsonl``, 56 prompts in 7 categories) ships with ftsdk. Each prompt has a checker:
``exact`` (the normalized reply is one of the answers), ``contains_any`` (an answer appears as a whole word),
``regex`` (a case-sensitive search in the stripped reply; ``(?i)`` makes it insensitive) or ``last_number`` (the reply's last number equals the answer).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsdk.evaluation.labels import normalize


class GeneralItem(BaseModel):
    """One prompt of the general-purpose set and how its reply is checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    category: str
    prompt: str = Field(min_length=1)
    check: Literal["exact", "contains_any", "regex", "last_number"]
    answers: list[str] = Field(min_length=1)

    def passes(self, reply: str) -> bool:
        """Whether ``reply`` answers this prompt correctly."""
        text = reply.strip()
        if self.check == "exact":
            return normalize(text) in {normalize(a) for a in self.answers}
        if self.check == "contains_any":
            return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", text, flags=re.IGNORECASE) for a in self.answers)
        if self.check == "regex":
            return any(re.search(a, text, flags=re.DOTALL) for a in self.answers)
        numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
        return bool(numbers) and float(numbers[-1].replace(",", "")) == float(self.answers[0])


def general_set(path: str | Path | None = None, *, per_category: int | None = None) -> list[GeneralItem]:
    """The shipped general-purpose set, or one of the same shape from ``path``; ``per_category`` keeps only the
    first that many prompts of each category."""
    from pydantic import ValidationError

    from ftsdk.plugin.errors import DataError

    source = Path(path) if path else Path(str(resources.files("ftsdk.evaluation") / "data" / "forgetting.jsonl"))
    if not source.is_file():
        raise DataError(f"general set not found: {source}", hint="give a JSONL file of general prompts")
    items = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                items.append(GeneralItem.model_validate_json(line))
            except ValidationError as exc:
                raise DataError(f"{source} line {number}: {exc.errors(include_url=False)[0]['msg']}",
                                hint="each line: {id, category, prompt, check, answers}") from None
    if not items:
        raise DataError(f"general set {source} holds no prompts")
    if per_category is None:
        return items
    kept: defaultdict[str, list[GeneralItem]] = defaultdict(list)
    for item in items:
        if len(kept[item.category]) < per_category:
            kept[item.category].append(item)
    return [item for group in kept.values() for item in group]


@dataclass(frozen=True)
class GeneralScore:
    """A model's answers on the general set: overall and per-category accuracy, and each item's outcome."""

    accuracy: float
    by_category: dict[str, float]
    passed: dict[str, bool]
    replies: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_general(items: list[GeneralItem], replies: list[str]) -> GeneralScore:
    """Check each reply against its item."""
    if len(items) != len(replies):
        raise ValueError(f"{len(replies)} replies for {len(items)} general prompts")
    passed = {item.id: item.passes(reply) for item, reply in zip(items, replies)}
    groups: dict[str, list[bool]] = defaultdict(list)
    for item in items:
        groups[item.category].append(passed[item.id])
    return GeneralScore(
        accuracy=sum(passed.values()) / len(items),
        by_category={c: sum(v) / len(v) for c, v in groups.items()},
        passed=passed,
        replies={item.id: reply for item, reply in zip(items, replies)},
    )


@dataclass(frozen=True)
class ForgettingCheck:
    """Base vs tuned on the general set; ``flagged`` names the overall score and the categories that dropped too much."""

    base: str
    tuned: str
    threshold: float
    base_score: GeneralScore
    tuned_score: GeneralScore
    flagged: list[str]

    @property
    def drop(self) -> float:
        """Overall accuracy lost (negative: gained)."""
        return self.base_score.accuracy - self.tuned_score.accuracy

    @property
    def forgot(self) -> bool:
        return bool(self.flagged)

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "tuned": self.tuned, "threshold": self.threshold, "drop": self.drop,
                "flagged": self.flagged, "base_score": self.base_score.as_dict(),
                "tuned_score": self.tuned_score.as_dict()}

    def summary(self) -> str:
        verdict = f"FLAGGED ({', '.join(self.flagged)})" if self.forgot else "no drop beyond the threshold"
        return (f"forgetting check {self.base} -> {self.tuned}: general accuracy {self.base_score.accuracy:.1%} -> "
                f"{self.tuned_score.accuracy:.1%} (threshold {self.threshold:.0%}): {verdict}")


def check_forgetting(base: GeneralScore, tuned: GeneralScore, *, threshold: float = 0.1,
                     category_threshold: float = 0.25, base_name: str = "base", tuned_name: str = "tuned") -> ForgettingCheck:
    """Flag ``overall`` if accuracy dropped by more than ``threshold`` (a fraction), and each category that dropped
    by more than ``category_threshold`` (categories are small: 0.25 is two prompts of eight)."""
    flagged = ["overall"] if base.accuracy - tuned.accuracy > threshold + 1e-9 else []
    flagged += [c for c, value in base.by_category.items() if value - tuned.by_category[c] > category_threshold + 1e-9]
    return ForgettingCheck(base_name, tuned_name, threshold, base, tuned, flagged)
