"""Typed evaluation results: per example, per candidate, and the comparison against a baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftsdk.evaluation.forgetting import ForgettingCheck, GeneralScore
from ftsdk.evaluation.metrics import JsonMetrics, LabelMetrics, TextMetrics

#: every metric a candidate can have: (what it is, higher is better (None: neither), how it is shown)
METRICS: dict[str, tuple[str, bool | None, str]] = {
    "accuracy": ("accuracy, generated reply", True, "pct"),
    "macro_f1": ("macro-F1, generated reply", True, "pct"),
    "invalid_rate": ("replies that are no label", False, "pct"),
    "constrained_accuracy": ("accuracy, likeliest label", True, "pct"),
    "constrained_macro_f1": ("macro-F1, likeliest label", True, "pct"),
    "json_valid": ("valid JSON", True, "pct"),
    "exact_match": ("exact match", True, "pct"),
    "field_match": ("field-level match", True, "pct"),
    "rouge_l": ("ROUGE-L (F)", True, "pct"),
    "follow_rate": ("follows the format rule", True, "pct"),
    # the headline perplexity counts the reference reply's tokens only: assistant-only tuning trains those, and the
    # prompt's tokens (system prompt, question) would make a tuned model look worse for not predicting the user
    "reply_perplexity": ("perplexity of the reference replies", False, "num"),
    "conversation_perplexity": ("perplexity, whole conversation", False, "num"),
    "general_accuracy": ("general set (forgetting check)", True, "pct"),
    "latency_s": ("seconds per reply", False, "sec"),
    "output_tokens": ("reply length, tokens", None, "num"),
}


def show(metric: str, value: float | None, *, delta: bool = False) -> str:
    """A metric value (or a change of it) as the tables show it."""
    if value is None:
        return ""
    style = METRICS[metric][2]
    if style == "pct":
        return f"{value * 100:+.1f} pt" if delta else f"{value:.1%}"
    if style == "sec":
        return f"{value:+.3f}s" if delta else f"{value:.3f}s"
    return f"{value:+.2f}" if delta else f"{value:.2f}"


@dataclass(frozen=True)
class ExampleResult:
    """One held-out example as a candidate answered it."""

    line: int
    prompt: str
    reference: str
    reply: str
    #: the likeliest label (constrained scoring), for label tasks
    choice: str | None
    #: None when the reply is right; else what went wrong ("wrong label", "invalid JSON", ...)
    failure: str | None
    #: how close the reply came (ROUGE-L, field match, or label log-probability margin); lower is worse
    closeness: float


@dataclass
class CandidateResult:
    """A candidate's scores on the held-out file (and on the general set when the forgetting check ran)."""

    name: str
    kind: str
    source: str
    runtime: str
    system_prompt: str | None
    few_shot: int
    metrics: dict[str, float]
    labels: LabelMetrics | None = None
    constrained: LabelMetrics | None = None
    json: JsonMetrics | None = None
    text: TextMetrics | None = None
    examples: list[ExampleResult] = field(default_factory=list)
    general: GeneralScore | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Comparison:
    """Every candidate's results, the deltas against the baseline and the forgetting checks."""

    task: str
    labels: list[str] | None
    baseline: str
    data: dict[str, Any]
    candidates: list[CandidateResult]
    forgetting: list[ForgettingCheck] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None

    def __getitem__(self, name: str) -> CandidateResult:
        for result in self.candidates:
            if result.name == name:
                return result
        raise KeyError(name)

    def delta(self, name: str, metric: str) -> float | None:
        """``name``'s metric minus the baseline's (None when either lacks it)."""
        ours, theirs = self[name].metrics.get(metric), self[self.baseline].metrics.get(metric)
        return None if ours is None or theirs is None else ours - theirs

    def metric_names(self) -> list[str]:
        return [m for m in METRICS if any(m in c.metrics for c in self.candidates)]

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows: each metric, every candidate's value, then each other candidate's change."""
        others = [c.name for c in self.candidates if c.name != self.baseline]
        header = ["metric", *(c.name for c in self.candidates), *(f"Δ {o}" for o in others)]
        rows = [
            [METRICS[m][0], *(show(m, c.metrics.get(m)) for c in self.candidates),
             *(show(m, self.delta(o, m), delta=True) for o in others)]
            for m in self.metric_names()
        ]
        return header, rows

    def summary(self) -> str:
        """The comparison table as aligned text, then the forgetting verdicts."""
        header, rows = self.table()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        out = [lines[0], "-" * len(lines[0]), *lines[1:]]
        return "\n".join(out + [check.summary() for check in self.forgetting])

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "labels": self.labels,
            "baseline": self.baseline,
            "data": self.data,
            "metric_labels": {m: METRICS[m][0] for m in self.metric_names()},
            "candidates": [c.as_dict() for c in self.candidates],
            "deltas": {c.name: {m: self.delta(c.name, m) for m in c.metrics} for c in self.candidates
                       if c.name != self.baseline},
            "forgetting": [f.as_dict() for f in self.forgetting],
        }
