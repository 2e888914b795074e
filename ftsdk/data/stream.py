"""Data larger than memory: validate and tokenize in one pass, keeping only a bounded window in memory.

:func:`tokenize_source` reads a source row by row (:func:`ftsdk.data.loading.validated_rows`), validates each
row, tokenizes it (raw text is packed) and appends the tokens to an Arrow file on disk in batches of
:data:`BATCH_ROWS`; the result is memory-mapped, so training reads it without loading it. What stays in memory
is one batch of tokenized rows, the row being read (a Parquet/Arrow batch), and the first
:data:`~ftsdk.data.loading.MAX_LISTED_PROBLEMS` problems: it does not grow with the file.
:func:`check_stream` is ``ftsdk data check --stream``: the same pass with per-row findings only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk.data.curate import (
    DataReport,
    conversation_of,
    has_empty_prompt,
    looks_truncated,
    pii_kinds,
    row_texts,
    token_length,
)
from ftsdk.data.formats import Example
from ftsdk.data.loading import Problems, validated_rows
from ftsdk.data.reading import Place
from ftsdk.data.sources import Source, as_source, fingerprint, label_of
from ftsdk.data.tokenize import (
    IGNORE_INDEX,
    TokenizedExample,
    TrainedTurns,
    check_template,
    pack,
    text_ids,
    tokenize_example,
)
from ftsdk.plugin.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

#: tokenized rows written to disk at a time
BATCH_ROWS = 1000


@dataclass(frozen=True)
class TokenizedSource:
    """A source validated and tokenized to ``arrow_file`` (``input_ids``, ``labels``), memory-mapped as ``dataset``."""

    path: str
    format: str
    rows: int
    sha256: str
    sequences: int
    dropped: int
    arrow_file: Path
    dataset: Dataset

    def summary(self) -> dict[str, object]:
        return {"path": self.path, "format": self.format, "rows": self.rows, "sha256": self.sha256,
                "sequences": self.sequences, "streamed": True}


def _tokenized(rows: Iterator[tuple[Place, Example, dict]], text: bool, tokenizer: Any, max_length: int,
               assistant_only: bool, turns: TrainedTurns, counts: Counter) -> Iterator[TokenizedExample]:
    if text:
        def documents() -> Iterator[list[int]]:
            for _, example, _ in rows:
                counts["rows"] += 1
                yield text_ids(tokenizer, example["text"])

        yield from pack(documents(), max_length)
        return
    for _, example, _ in rows:
        counts["rows"] += 1
        if counts["rows"] == 1:
            check_template(tokenizer, [example])
        tokenized = tokenize_example(tokenizer, example, max_length, assistant_only, turns)
        if any(label != IGNORE_INDEX for label in tokenized.labels):
            yield tokenized
        else:
            counts["dropped"] += 1


def tokenize_source(
    source: Source | Mapping[str, Any], work_dir: str | Path, tokenizer: Any, max_length: int, *,
    task: str = "sft", assistant_only: bool = True, turns: TrainedTurns = "all",
    columns: Mapping[str, str] | None = None,
) -> TokenizedSource:
    """Validate and tokenize ``source`` into ``work_dir/tokens.arrow`` in one pass; one DataError lists bad rows."""
    import pyarrow as pa
    from datasets import Dataset

    if task != "sft":
        raise DataError(f"streaming tokenizes SFT data; {task} data is loaded whole", hint="drop streaming")
    resolved = as_source(source)
    problems = Problems()
    format_name, rows = validated_rows(resolved, task, columns, problems)
    counts: Counter = Counter()
    target = Path(work_dir) / "tokens.arrow"
    target.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    batch: list[TokenizedExample] = []
    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        def flush() -> None:
            writer.write_batch(pa.record_batch([[e.input_ids for e in batch], [e.labels for e in batch]], schema=schema))
            counts["sequences"] += len(batch)
            batch.clear()

        for example in _tokenized(rows, format_name == "text", tokenizer, max_length, assistant_only, turns, counts):
            batch.append(example)
            if len(batch) >= BATCH_ROWS:
                flush()
        if batch:
            flush()
    label = label_of(resolved)
    problems.raise_if_any(label, format_name)
    if not counts["sequences"]:
        raise DataError(f"{label}: no row keeps a trained token within max_length={max_length}",
                        hint="raise training.max_length or shorten the prompts")
    return TokenizedSource(label, format_name, counts["rows"], fingerprint(resolved), counts["sequences"],
                           counts["dropped"], target, Dataset.from_file(str(target)))


def check_stream(source: Source | Mapping[str, Any], task: str = "sft", *, tokenizer: Any = None,
                 max_length: int | None = None, min_output_chars: int = 1,
                 columns: Mapping[str, str] | None = None) -> DataReport:
    """Validate a source of any size in one pass; report its per-row findings by place.

    Duplicates and contradictions need every row at once, so they are not searched (the report says so).
    """
    resolved = as_source(source)
    problems = Problems()
    format_name, rows = validated_rows(resolved, task, columns, problems)
    roles: Counter = Counter()
    lengths: Counter = Counter()  # token count -> rows: bounded by the longest row, not by the row count
    report = DataReport(label_of(resolved), format_name, 0, "", {})
    for place, example, raw in rows:
        report.rows += 1
        roles.update(m["role"] for m in conversation_of(example) or [])
        output = row_texts(example)[1]
        if len(output.strip()) < min_output_chars:
            report.short_outputs.append(place)
        if looks_truncated(output):
            report.truncated_outputs.append(place)
        if has_empty_prompt(example):
            report.empty_prompts.append(place)
        for kind in pii_kinds(raw):
            report.pii.setdefault(kind, []).append(place)
        if tokenizer is not None:
            length = token_length(tokenizer, example)
            lengths[length] += 1
            if max_length and length > max_length:
                report.too_long.append(place)
    problems.raise_if_any(report.path, format_name)
    report.sha256 = fingerprint(resolved)
    report.stats = {"rows": report.rows, "roles": dict(roles), "streamed": True}
    if lengths:
        report.stats["tokens"] = _length_stats(lengths)
    return report


def _length_stats(lengths: Counter) -> dict[str, Any]:
    """Mean, quantiles (nearest rank), max and total of a histogram of lengths."""
    rows = sum(lengths.values())
    total = sum(length * n for length, n in lengths.items())

    def quantile(q: float) -> int:
        seen = 0
        for length in sorted(lengths):
            seen += lengths[length]
            if seen >= q * rows:
                return length
        return max(lengths)

    return {"mean": round(total / rows, 1), "p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99),
            "max": max(lengths), "total": total}
