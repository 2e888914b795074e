"""Reading, format detection and row validation, with every bad row reported by line."""

from __future__ import annotations

import json

import pytest

from ftsdk.data.loading import MAX_LISTED_PROBLEMS, load_dataset
from ftsdk.plugin.errors import DataError
from ftsdk.testing import write_jsonl

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_chat_rows_load_as_conversations(tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "d.jsonl", [CHAT, CHAT]))
    assert data.format == "chat" and len(data.examples) == 2
    assert data.examples[0][1] == {"role": "assistant", "content": "hello"}
    assert len(data.sha256) == 64


def test_alpaca_rows_become_user_and_assistant_turns(tmp_path):
    rows = [{"instruction": "Translate", "input": "chat", "output": "cat"}, {"instruction": "Say hi", "output": "hi"}]
    data = load_dataset(write_jsonl(tmp_path / "a.jsonl", rows))
    assert data.format == "alpaca"
    assert data.examples[0] == [{"role": "user", "content": "Translate\n\nchat"}, {"role": "assistant", "content": "cat"}]
    assert data.examples[1][0]["content"] == "Say hi"


def test_prompt_completion_json_and_csv(tmp_path):
    rows = [{"prompt": "2+2?", "completion": "4"}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    (tmp_path / "p.csv").write_text("prompt,completion\n2+2?,4\n")
    for name in ("p.json", "p.csv"):
        data = load_dataset(tmp_path / name)
        assert data.format == "prompt_completion"
        assert data.examples == [[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]]


def test_every_bad_row_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(CHAT),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}, {"role": "user", "content": "?"}]}),
        "",
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps([1, 2]),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "late"},
                                 {"role": "assistant", "content": "a"}]}),
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert "5 invalid row(s)" in message
    assert "line 2: not valid JSON" in message
    assert "line 3: messages: needs at least one assistant message" in message
    assert "line 5: messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'" in message
    assert "line 6: expected a JSON object, got list" in message
    assert "line 7: messages: a system message may only come first" in message
    assert "line 1" not in message


def test_long_problem_lists_are_capped(tmp_path):
    rows = [CHAT] + [{"messages": [{"role": "user", "content": "q"}]}] * 30
    with pytest.raises(DataError) as caught:
        load_dataset(write_jsonl(tmp_path / "many.jsonl", rows))
    assert len(caught.value.problems) == MAX_LISTED_PROBLEMS + 1
    assert caught.value.problems[-1] == "... and 10 more"


def test_unknown_shape_names_the_accepted_formats(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset(write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}]))
    message = str(caught.value)
    assert "keys: answer, question" in message and "alpaca" in message and "prompt_completion" in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.jsonl", None, "data file not found"),
        ("empty.jsonl", "\n\n", "holds no rows"),
        ("data.parquet", "x", "not a readable Parquet file"),
        ("data.xlsx", "x", "unsupported file type"),
    ],
)
def test_file_level_errors(tmp_path, name, content, expected):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=expected):
        load_dataset(tmp_path / name)
