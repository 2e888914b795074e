"""Load a data file for a task: read, detect the format, validate every row, convert."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ftsdk.artifacts import sha256_file
from ftsdk.data.formats import FORMATS, FORMATS_OF_TASK, Example, describe_formats, detect_format
from ftsdk.data.reading import read_rows
from ftsdk.errors import DataError

MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class DataSet:
    """A validated data file, converted to its task's examples (conversations for SFT)."""

    path: Path
    format: str
    examples: list[Example]
    sha256: str
    #: each example's line (row, for .json files) in the file, and its raw row
    lines: list[int] = field(default_factory=list)
    raw: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {"path": str(self.path), "format": self.format, "rows": len(self.examples), "sha256": self.sha256}


def load_dataset(path: str | Path, task: str = "sft") -> DataSet:
    """Validate every row of ``path`` for ``task``; raise one DataError listing the bad rows."""
    if task not in FORMATS_OF_TASK:
        raise DataError(f"unknown data task '{task}'", hint=f"tasks: {', '.join(FORMATS_OF_TASK)}")
    path = Path(path)
    unit = "row" if path.suffix.lower() == ".json" else "line"
    raw_rows, problems = read_rows(path)
    if not raw_rows and not problems:
        raise DataError(f"{path} holds no rows")
    first = next((row for _, row in raw_rows if isinstance(row, dict)), None)
    format_name = detect_format(first, task) if first is not None else None
    if format_name is None:
        keys = sorted(first) if first is not None else []
        raise DataError(
            f"{path}: cannot tell the data format from the first row (keys: {', '.join(keys) or 'none'})",
            hint=f"accepted shapes are {describe_formats(task)}",
        )
    row_model = FORMATS[format_name][0]
    examples: list[Example] = []
    lines: list[int] = []
    raw: list[dict] = []
    for number, row in raw_rows:
        if not isinstance(row, dict):
            problems.append(f"{unit} {number}: expected a JSON object, got {type(row).__name__}")
            continue
        try:
            examples.append(row_model.model_validate(row).to_example())
            lines.append(number)
            raw.append(row)
        except ValidationError as exc:
            for item in exc.errors(include_url=False):
                where = ".".join(str(p) for p in item["loc"]) or "row"
                problems.append(f"{unit} {number}: {where}: {item['msg'].removeprefix('Value error, ')}")
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        if more:
            shown.append(f"... and {more} more")
        raise DataError(
            f"{path}: {len(problems)} invalid row(s) in {format_name} format", problems=shown,
            hint="fix or remove these rows; nothing was loaded or trained",
        )
    return DataSet(path, format_name, examples, sha256_file(path), lines, raw)
