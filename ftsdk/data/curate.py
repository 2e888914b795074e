"""Data checks and preparation: statistics, duplicates, contradictions, PII, filters and splits.

``check`` only reports; ``prepare`` removes what the report flags (as configured), splits the rest
and writes the splits, a report and a manifest atomically.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftsdk.artifacts import sha256_file, write_output
from ftsdk.data.duplicates import exact_groups, near_groups
from ftsdk.data.loading import DataSet, load_dataset
from ftsdk.data.pii import find_pii, redact
from ftsdk.data.sources import Source
from ftsdk.data.split import split_indices

_TERMINAL = tuple(".!?…)]}\"'`*»”") + ("```",)


@dataclass
class DataReport:
    """What ``check`` found; every place is a line number of the file."""

    path: str
    format: str
    rows: int
    sha256: str
    stats: dict[str, Any]
    exact_duplicates: list[list[int]] = field(default_factory=list)
    near_duplicates: list[list[int]] = field(default_factory=list)
    contradictions: list[dict[str, Any]] = field(default_factory=list)
    pii: dict[str, list[int]] = field(default_factory=dict)
    short_outputs: list[int] = field(default_factory=list)
    truncated_outputs: list[int] = field(default_factory=list)
    too_long: list[int] = field(default_factory=list)
    #: rows with an empty or whitespace-only user, system or tool turn (a finding: the reply is still learned)
    empty_prompts: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PrepareOptions(BaseModel):
    """What ``prepare`` removes and how it splits."""

    model_config = ConfigDict(extra="forbid")

    drop_exact_duplicates: bool = Field(True, description="Keep one row of each exact-duplicate group.")
    drop_near_duplicates: bool = Field(False, description="Keep one row of each near-duplicate group.")
    near_threshold: float = Field(0.8, gt=0, le=1, description="MinHash Jaccard similarity of near duplicates.")
    drop_contradictions: bool = Field(True, description="Drop rows whose input has several different outputs.")
    redact_pii: bool = Field(False, description="Replace emails, phones, cards, IBANs and IPs by placeholders.")
    min_output_chars: int = Field(1, ge=0, description="Drop rows whose output is shorter.")
    drop_truncated: bool = Field(False, description="Drop long outputs that end mid-sentence.")
    max_length: int | None = Field(None, ge=8, description="Drop rows longer than this many tokens (needs a model).")
    split: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}, description="Split names and fractions."
    )
    stratify: bool = Field(True, description="Keep label proportions in every split (label-style data).")
    seed: int = Field(42, ge=0, description="Seed of the split.")


def _turn_text(message: dict[str, Any]) -> str:
    calls = message.get("tool_calls")
    return message["content"] + (" " + json.dumps(calls, sort_keys=True) if calls else "")


def conversation_of(example: Any) -> list[dict[str, Any]] | None:
    """The messages of an SFT example (plain or with tools), or None (raw text, other tasks)."""
    if isinstance(example, list):
        return example
    return example["messages"] if example.keys() == {"messages", "tools"} else None


def row_texts(example: Any) -> tuple[str, str]:
    """(input, output) of an example: the turns before the last reply (no system prompt), and that reply.

    Raw text rows have no input: their output is the text.
    """
    conversation = conversation_of(example)
    if conversation is not None:
        turns = [m for m in conversation if m["role"] != "system"]
        last = max(i for i, m in enumerate(turns) if m["role"] == "assistant")
        return "\n".join(f"{m['role']}: {_turn_text(m)}" for m in turns[:last]), _turn_text(turns[last])
    if example.keys() == {"text"}:
        return "", example["text"]
    prompt = example.get("prompt", "")
    output = example.get("chosen", example.get("completion", ""))
    return _flatten(prompt), _flatten(output)


def _flatten(value: Any) -> str:
    """Text of a field: a string, the contents of a message list, or (other columns of prompt rows) its JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return "\n".join(_turn_text(m) for m in value)
    return "" if value is None else json.dumps(value, sort_keys=True, default=str)


def token_length(tokenizer: Any, example: Any) -> int:
    """Tokens of the longest sequence a trainer builds from the example (prompt + its longest completion)."""
    if conversation_of(example) is not None or example.keys() == {"text"}:
        from ftsdk.data.tokenize import tokenize_example

        return len(tokenize_example(tokenizer, example, 10**9).input_ids)
    prompt = _flatten(example.get("prompt", ""))
    completions = [_flatten(example[key]) for key in ("chosen", "rejected", "completion") if key in example]
    return max(len(tokenizer(prompt + completion)["input_ids"]) for completion in completions or [""])


def labels_of(outputs: list[str]) -> list[str] | None:
    """The outputs themselves when the data looks like classification (few short distinct outputs)."""
    distinct = set(outputs)
    if len(distinct) <= 50 and len(outputs) >= 3 * len(distinct) and all(len(o.split()) <= 4 for o in distinct):
        return outputs
    return None


def _stats(data: DataSet, outputs: list[str], tokenizer: Any, max_length: int | None) -> tuple[dict, list[int]]:
    roles = Counter(m["role"] for e in data.examples for m in conversation_of(e) or [])
    stats: dict[str, Any] = {"rows": len(data.examples), "roles": dict(roles)}
    labels = labels_of(outputs)
    if labels:
        stats["labels"] = dict(sorted(Counter(labels).items()))
    too_long: list[int] = []
    if tokenizer is not None:
        lengths = [token_length(tokenizer, e) for e in data.examples]
        cut = statistics.quantiles(lengths, n=100) if len(lengths) > 1 else lengths * 99
        stats["tokens"] = {"mean": round(statistics.fmean(lengths), 1), "p50": cut[49], "p90": cut[89],
                           "p99": cut[98], "max": max(lengths), "total": sum(lengths)}
        if max_length:
            too_long = [line for line, n in zip(data.lines, lengths) if n > max_length]
    return stats, too_long


def check(path: Source | Mapping[str, Any], task: str = "sft", *, tokenizer: Any = None,
          max_length: int | None = None, near_threshold: float = 0.8, min_output_chars: int = 1,
          columns: Mapping[str, str] | None = None) -> DataReport:
    """Validate a data file, folder or ``datasets`` source; report its statistics and every problem, by line."""
    data = load_dataset(path, task, columns=columns)
    return analyse(data, tokenizer, max_length=max_length, near_threshold=near_threshold,
                   min_output_chars=min_output_chars)


def analyse(data: DataSet, tokenizer: Any = None, *, max_length: int | None = None, near_threshold: float = 0.8,
            min_output_chars: int = 1) -> DataReport:
    """:func:`check` of data already loaded (e.g. what a fit trained on): statistics and problems, by line."""
    inputs, outputs = zip(*(row_texts(e) for e in data.examples)) if data.examples else ((), ())
    lines = data.lines
    stats, too_long = _stats(data, list(outputs), tokenizer, max_length)
    by_input: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(inputs):
        by_input[" ".join(text.lower().split())].append(i)
    contradictions = [
        {"input": inputs[ids[0]][:200], "lines": [lines[i] for i in ids], "outputs": sorted({outputs[i] for i in ids})}
        for ids in by_input.values()
        if len({outputs[i] for i in ids}) > 1
    ]
    pii: dict[str, list[int]] = defaultdict(list)
    for line, example in zip(lines, data.raw):
        for kind in pii_kinds(example):
            pii[kind].append(line)
    whole = [f"{i}\n{o}" for i, o in zip(inputs, outputs)]
    return DataReport(
        path=str(data.path),
        format=data.format,
        rows=len(data.examples),
        sha256=data.sha256,
        stats=stats,
        exact_duplicates=[[lines[i] for i in g] for g in exact_groups(whole)],
        near_duplicates=[[lines[i] for i in g] for g in near_groups(whole, near_threshold)],
        contradictions=contradictions,
        pii=dict(pii),
        short_outputs=[lines[i] for i, o in enumerate(outputs) if len(o.strip()) < min_output_chars],
        truncated_outputs=[lines[i] for i, o in enumerate(outputs) if looks_truncated(o)],
        too_long=too_long,
        empty_prompts=[line for line, e in zip(lines, data.examples) if has_empty_prompt(e)],
    )


def looks_truncated(output: str) -> bool:
    """A long output that does not end like a sentence, list or code block does."""
    return len(output) >= 200 and not output.rstrip().endswith(_TERMINAL)


def pii_kinds(row: dict) -> list[str]:
    """The kinds of personal data found anywhere in a raw row."""
    return sorted({m.kind for m in find_pii(json.dumps(row, ensure_ascii=False))})


def has_empty_prompt(example: Any) -> bool:
    """Whether a user, system or tool turn is empty or whitespace-only (an assistant one would be an error)."""
    return any(m["role"] != "assistant" and not m["content"].strip() for m in conversation_of(example) or [])


@dataclass
class PreparedData:
    """The written splits, what was removed (reason -> lines) and the report of the source file."""

    output_dir: Path
    files: dict[str, Path]
    removed: dict[str, list[int]]
    report: DataReport


def prepare(path: Source | Mapping[str, Any], output_dir: str | Path, task: str = "sft", *,
            options: PrepareOptions | dict[str, Any] | None = None, tokenizer: Any = None,
            overwrite: bool = False, columns: Mapping[str, str] | None = None) -> PreparedData:
    """Clean and split a data file into ``output_dir`` (one JSONL per split, report, manifest)."""
    from ftsdk.artifacts import check_output_dir
    from ftsdk.plugin.errors import ConfigError
    from ftsdk.plugin.settings import validate_config

    opts = validate_config(PrepareOptions, options, where="prepare options")
    if opts.max_length and tokenizer is None:
        raise ConfigError("max_length filtering needs a tokenizer", hint="pass --model (or tokenizer=)")
    check_output_dir(output_dir, overwrite)
    data = load_dataset(path, task, columns=columns)
    report = analyse(data, tokenizer, max_length=opts.max_length, near_threshold=opts.near_threshold,
                     min_output_chars=opts.min_output_chars)
    removed = _removals(report, opts)
    dropped = {line for lines in removed.values() for line in lines}
    keep = [i for i, line in enumerate(data.lines) if line not in dropped]
    position = {data.lines[i]: k for k, i in enumerate(keep)}
    groups = [[position[line] for line in group if line in position]
              for group in report.near_duplicates + report.exact_duplicates]
    outputs = [row_texts(data.examples[i])[1] for i in keep]
    strata = labels_of(outputs) if opts.stratify else None
    assignment = split_indices(len(keep), opts.split, seed=opts.seed, strata=strata,
                               groups=[g for g in groups if len(g) > 1])
    files: dict[str, Path] = {}
    target = Path(output_dir)
    with write_output(target, kind="data", overwrite=overwrite) as out:
        tmp = out.folder
        for name, indices in assignment.items():
            rows = [data.raw[keep[k]] for k in indices]
            if opts.redact_pii:
                rows = [_redacted(row) for row in rows]
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")
            files[name] = target / f"{name}.jsonl"
        summary = {"source": {"path": str(data.path), "sha256": data.sha256, "rows": len(data.examples)},
                   "options": opts.model_dump(), "removed": {k: len(v) for k, v in removed.items()},
                   "splits": {name: {"rows": len(idx), "sha256": sha256_file(tmp / f"{name}.jsonl")}
                              for name, idx in assignment.items()}}
        (tmp / "report.json").write_text(json.dumps({"report": report.as_dict(), "removed": removed}, indent=1),
                                         encoding="utf-8")
        (tmp / "report.md").write_text(report_markdown(report, removed, summary["splits"]), encoding="utf-8")
        out.manifest.update(summary)
    return PreparedData(target, files, removed, report)


def _removals(report: DataReport, opts: PrepareOptions) -> dict[str, list[int]]:
    removed: dict[str, list[int]] = {}
    if opts.drop_exact_duplicates:
        removed["exact duplicate"] = [line for group in report.exact_duplicates for line in group[1:]]
    if opts.drop_near_duplicates:
        removed["near duplicate"] = [line for group in report.near_duplicates for line in group[1:]]
    if opts.drop_contradictions:
        removed["contradiction"] = [line for c in report.contradictions for line in c["lines"]]
    removed["output too short"] = report.short_outputs
    if opts.drop_truncated:
        removed["output truncated"] = report.truncated_outputs
    removed["longer than max_length"] = report.too_long
    return {reason: sorted(set(lines)) for reason, lines in removed.items() if lines}


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


def report_markdown(report: DataReport, removed: dict[str, list[int]] | None = None,
                    splits: dict[str, dict[str, Any]] | None = None) -> str:
    """A readable summary of a data report."""
    def lines_of(items: list[int]) -> str:
        shown = ", ".join(map(str, items[:12]))
        return shown + (f" and {len(items) - 12} more" if len(items) > 12 else "")

    out = [f"# Data report: {Path(report.path).name}", "",
           f"{report.rows} rows, {report.format} format, sha256 `{report.sha256[:12]}`", ""]
    if "labels" in report.stats:
        out += ["| label | rows |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report.stats["labels"].items()] + [""]
    if report.stats.get("streamed"):
        out += ["Checked in one pass (--stream): duplicates and contradictions were not searched.", ""]
    if "tokens" in report.stats:
        out += ["Tokens per row: " + ", ".join(f"{k} {v}" for k, v in report.stats["tokens"].items()), ""]
    findings = [
        ("exact duplicate groups", [lines_of(g) for g in report.exact_duplicates]),
        ("near-duplicate groups", [lines_of(g) for g in report.near_duplicates]),
        ("contradictions (same input, different outputs)",
         [f"lines {lines_of(c['lines'])}: {', '.join(c['outputs'])}" for c in report.contradictions]),
        ("personal data", [f"{kind}: {len(found)} row(s), lines {lines_of(found)}" for kind, found in report.pii.items()]),
        ("outputs too short", [lines_of(report.short_outputs)] if report.short_outputs else []),
        ("outputs that look truncated", [lines_of(report.truncated_outputs)] if report.truncated_outputs else []),
        ("rows longer than max_length", [lines_of(report.too_long)] if report.too_long else []),
        ("empty or whitespace-only prompts (user, system or tool turns)",
         [lines_of(report.empty_prompts)] if report.empty_prompts else []),
    ]
    for title, items in findings:
        out.append(f"## {title}: {len(items) if items else 'none'}")
        out += [f"- {item}" for item in items[:20]] + [""]
    if removed is not None:
        out += ["## Removed", ""] + ([f"- {reason}: {len(lines)} (lines {lines_of(lines)})"
                                      for reason, lines in removed.items()] or ["- nothing"]) + [""]
    if splits:
        out += ["## Splits", ""] + [f"- {name}: {s['rows']} rows" for name, s in splits.items()] + [""]
    return "\n".join(out)
