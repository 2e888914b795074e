"""Reading raw rows from JSONL, JSON and CSV files, keeping each row's line number."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ftsdk.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv")


def read_rows(path: str | Path) -> tuple[list[tuple[int, Any]], list[str]]:
    """Return ``(line_number, row)`` pairs and the problems of rows that could not be parsed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}", hint="check the path (relative paths start at the cwd)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path)
    raise DataError(f"{path}: unsupported file type '{suffix}'", hint=f"use one of {', '.join(SUFFIXES)}")


def _read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], list[str]]:
    rows, problems = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
    return rows, problems


def _read_json(path: Path) -> tuple[list[tuple[int, Any]], list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} style files
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows", hint="or write one JSON object per line (.jsonl)")
    return list(enumerate(data, start=1)), []


def _read_csv(path: Path) -> tuple[list[tuple[int, Any]], list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = []
        for row in reader:
            rows.append((reader.line_num, {k: v for k, v in row.items() if k is not None}))
    return rows, []
