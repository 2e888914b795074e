"""Load a data source for a task: read, detect the format, validate every row, convert."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ftsdk.data.formats import FORMATS, FORMATS_OF_TASK, Example, describe_formats, detect_format
from ftsdk.data.reading import Place, Unreadable, describe, unit_of
from ftsdk.data.sources import HubData, Source, as_source, fingerprint, label_of, source_rows
from ftsdk.plugin.errors import DataError

MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class DataSet:
    """A validated data source, converted to its task's examples (conversations for SFT)."""

    path: Path | str
    format: str
    examples: list[Example]
    sha256: str
    #: each example's place in the source (line, or row for .json/Parquet/Arrow/datasets; file:line in a folder)
    lines: list[Place] = field(default_factory=list)
    raw: list[dict] = field(default_factory=list)
    #: the column renaming applied, and the ``datasets`` source (if any): what re-reads the same rows
    columns: dict[str, str] = field(default_factory=dict)
    hub: HubData | None = None

    def summary(self) -> dict[str, object]:
        summary: dict[str, object] = {"path": str(self.path), "format": self.format, "rows": len(self.examples),
                                      "sha256": self.sha256}
        if self.columns:
            summary["columns"] = dict(self.columns)
        if self.hub is not None:
            summary["hub"] = self.hub.model_dump(mode="json")
        return summary


class Problems:
    """Problems of a source, by place: the first :data:`MAX_LISTED_PROBLEMS` kept, the rest counted."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(text)

    def raise_if_any(self, label: str, format_name: str | None) -> None:
        if not self.count:
            return
        shown = self.listed + ([f"... and {self.count - len(self.listed)} more"] if self.count > len(self.listed)
                               else [])
        kind = f" in {format_name} format" if format_name else ""
        raise DataError(f"{label}: {self.count} invalid row(s){kind}", problems=shown,
                        hint="fix or remove these rows; nothing was loaded or trained")


def validated_rows(source: Path | HubData, task: str, columns: Mapping[str, str] | None,
                   problems: Problems) -> tuple[str, Iterator[tuple[Place, Example, dict]]]:
    """The format of ``source`` (from its first row) and an iterator of its valid rows as examples.

    Rows that fail go to ``problems`` (read it once the iterator is exhausted). One pass, one row at a time.
    """
    if task not in FORMATS_OF_TASK:
        raise DataError(f"unknown data task '{task}'", hint=f"tasks: {', '.join(FORMATS_OF_TASK)}")
    label = label_of(source)
    unit = "row" if isinstance(source, HubData) else unit_of(source)
    rows = source_rows(source, columns)
    head: list[tuple[Place, Any]] = []
    first = None
    for place, row in rows:  # read up to the first row that is an object
        head.append((place, row))
        if isinstance(row, dict):
            first = row
            break
    if first is None:
        for place, row in head:
            problems.add(f"{describe(place, unit)}: " + (row.reason if isinstance(row, Unreadable) else
                                                         f"expected a JSON object, got {type(row).__name__}"))
        if not problems.count:
            raise DataError(f"{label} holds no rows")
        problems.raise_if_any(label, None)
    format_name = detect_format(first, task) if first is not None else None
    if format_name is None:
        keys = sorted(first) if first is not None else []
        raise DataError(
            f"{label}: cannot tell the data format from the first row (keys: {', '.join(keys) or 'none'})",
            hint=f"accepted shapes are {describe_formats(task)}"
            + ("; rename columns with `columns: {source: name}`" if keys else ""),
        )
    row_model = FORMATS[format_name][0]

    def examples() -> Iterator[tuple[Place, Example, dict]]:
        for place, row in _chain(head, rows):
            where = describe(place, unit)
            if isinstance(row, Unreadable):
                problems.add(f"{where}: {row.reason}")
                continue
            if not isinstance(row, dict):
                problems.add(f"{where}: expected a JSON object, got {type(row).__name__}")
                continue
            try:
                yield place, row_model.model_validate(row).to_example(), row
            except ValidationError as exc:
                for item in exc.errors(include_url=False):
                    loc = ".".join(str(p) for p in item["loc"])
                    problems.add(f"{where}: {loc + ': ' if loc else ''}{item['msg'].removeprefix('Value error, ')}")

    return format_name, examples()


def _chain(head: list[tuple[Place, Any]], rest: Iterator[tuple[Place, Any]]) -> Iterator[tuple[Place, Any]]:
    yield from head
    yield from rest


def load_dataset(path: Source | Mapping[str, Any], task: str = "sft", *,
                 columns: Mapping[str, str] | None = None) -> DataSet:
    """Validate every row of a file, folder or ``datasets`` source for ``task``; one DataError lists the bad rows.

    ``columns`` renames source columns to ftsdk's names (``{"question": "prompt", "answer": "completion"}``).
    """
    source = as_source(path)
    problems = Problems()
    format_name, rows = validated_rows(source, task, columns, problems)
    examples: list[Example] = []
    lines: list[Place] = []
    raw: list[dict] = []
    for place, example, row in rows:
        examples.append(example)
        lines.append(place)
        raw.append(row)
    problems.raise_if_any(label_of(source), format_name)
    if not examples:
        raise DataError(f"{label_of(source)} holds no rows")
    hub = source if isinstance(source, HubData) else None
    return DataSet(source if hub is None else hub.label(), format_name, examples, fingerprint(source), lines, raw,
                   dict(columns or {}), hub)
