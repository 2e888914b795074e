"""Property: any generated data file either loads (and checks) or raises DataError, nothing else (issue 13).

Rows are drawn near the accepted shapes (chat with tools, alpaca, prompt/completion, text, preference, prompt
rows, with wrong types, empty and odd strings, deep values) and written as JSONL, JSON, CSV or raw bytes.
The default run tries a fixed, derandomized budget; ``pytest -m slow tests/data/test_fuzz.py`` a larger one.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsdk.data.curate import check
from ftsdk.data.formats import FORMATS_OF_TASK
from ftsdk.plugin.errors import DataError

KEYS = ["messages", "role", "content", "tools", "tool_calls", "tool_call_id", "name", "function", "arguments",
        "type", "id", "instruction", "input", "output", "prompt", "completion", "chosen", "rejected", "label",
        "text", "parameters"]
ROLES = ["system", "user", "assistant", "tool", "robot", ""]
text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["", " ", "\n", "\ud800", "\ufeff", "a,b", '"', "\x00", "ok"])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS) | text, inner, max_size=3), max_leaves=12)
message = st.fixed_dictionaries({"role": st.sampled_from(ROLES)}, optional={
    "content": text | values, "tool_calls": st.lists(st.fixed_dictionaries(
        {"function": st.fixed_dictionaries({"name": text}, optional={"arguments": values | text})},
        optional={"id": text, "type": st.sampled_from(["function", "x"])}), max_size=2),
    "tool_call_id": text, "name": text})
tool = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": text}, optional={"parameters": values, "description": text})})
VALID = [
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    {"instruction": "say hi", "output": "hi"},
    {"prompt": "2+2?", "completion": "4"},
    {"text": "a document"},
    {"prompt": "q", "chosen": "good", "rejected": "bad"},
    {"prompt": "q", "completion": "a", "label": True},
    {"tools": [{"type": "function", "function": {"name": "f"}}], "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
]
valid = st.sampled_from(VALID)
# a valid row with one field replaced by a generated value
mutated = st.builds(lambda row, key, value: {**row, key: value}, valid, st.sampled_from(KEYS), values)
rows = st.one_of(
    valid,
    mutated,
    st.fixed_dictionaries({"messages": st.lists(message, max_size=5)}, optional={"tools": st.lists(tool, max_size=2)}),
    st.fixed_dictionaries({"instruction": text, "output": text}, optional={"input": text | values}),
    st.fixed_dictionaries({"prompt": text | st.lists(message, max_size=3), "completion": text | values},
                          optional={"label": values}),
    st.fixed_dictionaries({"prompt": text | st.lists(message, max_size=3), "chosen": text | st.lists(message),
                           "rejected": text | st.lists(message, max_size=2)}),
    st.fixed_dictionaries({"text": text | values}),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
    values,
)
SUFFIXES = [".jsonl", ".json", ".csv", ".txt", ".bin.jsonl"]


def write(folder: Path, suffix: str, items: list, raw: bytes) -> Path:
    """``items`` written as a file of ``suffix`` (``.bin.jsonl``: the raw bytes as a JSONL file)."""
    path = folder / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), "utf-8", "surrogatepass")
    elif suffix == ".json":
        path.write_text(json.dumps(items), encoding="utf-8")
    elif suffix == ".csv":
        buffer = io.StringIO()
        header = sorted({k for r in items if isinstance(r, dict) for k in r}) or ["prompt"]
        writer = csv.writer(buffer)
        writer.writerow(header)
        for r in items:
            writer.writerow([json.dumps(r.get(k)) if isinstance(r, dict) else str(r) for k in header])
        path.write_bytes(buffer.getvalue().encode("utf-8", "surrogatepass"))
    elif suffix == ".txt":
        path.write_bytes("\n\n".join(str(r) for r in items).encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(raw)
    return path


TALLY: Counter = Counter()


def _property(items: list, raw: bytes, suffix: str, task: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), suffix, items, raw)
        try:
            check(path, task)
            TALLY["loaded"] += 1
        except DataError:
            TALLY["DataError"] += 1


def _test(budget: int):
    @settings(max_examples=budget, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(rows, min_size=1, max_size=4) | st.lists(st.one_of(valid, mutated), min_size=1, max_size=4),
           st.binary(max_size=64), st.sampled_from(SUFFIXES),
           st.sampled_from(sorted(FORMATS_OF_TASK)))
    def run(items, raw, suffix, task):
        _property(items, raw, suffix, task)

    return run


def test_generated_files_load_or_raise_data_error():
    TALLY.clear()
    _test(150)()
    print(f"\n{sum(TALLY.values())} generated files: {dict(TALLY)}")
    assert TALLY["loaded"] and TALLY["DataError"]  # the generator reaches both outcomes


@pytest.mark.slow
def test_generated_files_load_or_raise_data_error_at_scale():
    TALLY.clear()
    _test(5000)()
    print(f"\n{sum(TALLY.values())} generated files: {dict(TALLY)}")
    assert TALLY["loaded"] and TALLY["DataError"]
