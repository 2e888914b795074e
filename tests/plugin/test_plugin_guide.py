"""docs/plugin-guide.md's reference tables match the code: each job type's fields (generated here from the
dataclasses in ftsdk.plugin.jobs) and each data task's row shapes (checked through ftsdk.data.formats)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

import ftsdk
from ftsdk.data.formats import FORMATS, FORMATS_OF_TASK

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugin-guide.md"
JOB_TYPES = ("TrainJob", "TrainOutcome", "QuantizeJob", "MergeRequest", "MergeInput", "LaunchRequest")
_FIELD = re.compile(r"^\s+(\w+):")


def _comments(cls: type) -> dict[str, str]:
    """Each field's ``#:`` comment lines in the class source, joined."""
    found, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif match := _FIELD.match(line):
            found[match.group(1)] = " ".join(pending)
            pending = []
        else:
            pending = []
    return found


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{field.default!r}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{field.default_factory()!r}`"
    return "required"


def field_table(cls: type) -> str:
    """The Markdown table of a job dataclass: field, type, default and its ``#:`` comment."""
    comments = _comments(cls)
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        kind = str(field.type).replace(" | ", " or ")
        rows.append(f"| `{field.name}` | `{kind}` | {_default(field)} | {comments.get(field.name) or ''} |")
    return "\n".join(rows)


@pytest.mark.parametrize("name", JOB_TYPES)
def test_the_guide_holds_each_job_types_generated_table(name):
    table = field_table(getattr(ftsdk, name))
    page = GUIDE.read_text(encoding="utf-8")
    assert f"### `ftsdk.{name}`" in page
    assert table in page, f"docs/plugin-guide.md's table of {name} drifted from the code; it is now:\n\n{table}"


_ROW = re.compile(r"^\| `(?P<task>\w+)` \| `(?P<format>\w+)` \| `(?P<row>.+?)` \| `(?P<example>.+?)` \|$", re.M)


def test_the_guide_shows_every_format_of_every_task():
    shown = {(m["task"], m["format"]) for m in _ROW.finditer(GUIDE.read_text(encoding="utf-8"))}
    assert shown == {(task, name) for task, names in FORMATS_OF_TASK.items() for name in names}


@pytest.mark.parametrize("match", list(_ROW.finditer(GUIDE.read_text(encoding="utf-8"))),
                         ids=lambda m: m["format"])
def test_each_row_becomes_the_shown_train_example(match):
    row_model, _ = FORMATS[match["format"]]
    example = row_model.model_validate(json.loads(match["row"])).to_example()
    assert example == json.loads(match["example"])
