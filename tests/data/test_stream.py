"""Data larger than memory: one pass validates and tokenizes into a memory-mapped Arrow file (issue 14)."""

from __future__ import annotations

import json

import pytest

from ftsdk.cli import main
from ftsdk.data import stream
from ftsdk.data.curate import check
from ftsdk.data.loading import load_dataset
from ftsdk.data.stream import check_stream, tokenize_source
from ftsdk.data.tokenize import tokenize_all
from ftsdk.plugin.errors import DataError
from ftsdk.testing import build_tokenizer, write_jsonl
from tests.data.test_curation import ROWS


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_streamed_tokens_equal_the_in_memory_ones(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "BATCH_ROWS", 7)  # several batches
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    streamed = tokenize_source(path, tmp_path / "work", tokenizer, 64, turns="last")
    kept, dropped = tokenize_all(tokenizer, load_dataset(path).examples, 64, True, "last")
    assert streamed.dataset["input_ids"] == [e.input_ids for e in kept]
    assert streamed.dataset["labels"] == [e.labels for e in kept]
    assert (streamed.rows, streamed.sequences, streamed.dropped) == (len(ROWS), len(kept), dropped)
    assert streamed.summary()["sha256"] == load_dataset(path).sha256 and streamed.format == "chat"


def test_streamed_text_is_packed(tokenizer, tmp_path):
    (tmp_path / "c.txt").write_text("\n\n".join(f"document number {i} is about colors" for i in range(50)))
    streamed = tokenize_source(tmp_path / "c.txt", tmp_path / "work", tokenizer, 16)
    blocks, _ = tokenize_all(tokenizer, load_dataset(tmp_path / "c.txt").examples, 16, True)
    assert streamed.dataset["input_ids"] == [b.input_ids for b in blocks] and streamed.rows == 50


def test_bad_rows_are_listed_after_the_pass(tokenizer, tmp_path):
    rows = ROWS[:3] + [{"messages": [{"role": "user", "content": "q"}]}] * 25
    with pytest.raises(DataError) as caught:
        tokenize_source(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "w", tokenizer, 64)
    assert "25 invalid row(s)" in str(caught.value) and "line 4: messages" in str(caught.value)
    assert caught.value.problems[-1] == "... and 5 more"


def test_check_stream_reports_per_row_findings_like_check(tokenizer, tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS + [{"messages": [{"role": "user", "content": " "},
                                                                   {"role": "assistant", "content": "x"}]}])
    whole, streamed = check(path, tokenizer=tokenizer, max_length=30), check_stream(path, tokenizer=tokenizer,
                                                                                    max_length=30)
    for name in ("rows", "format", "sha256", "pii", "short_outputs", "truncated_outputs", "too_long", "empty_prompts"):
        assert getattr(streamed, name) == getattr(whole, name), name
    assert streamed.stats["tokens"]["max"] == whole.stats["tokens"]["max"]
    assert streamed.stats["tokens"]["total"] == whole.stats["tokens"]["total"]
    assert streamed.exact_duplicates == [] and whole.exact_duplicates
    assert main(["data", "check", str(path), "--stream"]) == 0
    assert "duplicates and contradictions were not searched" in capsys.readouterr().out


def test_check_stream_json(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a document"}])
    assert main(["data", "check", str(path), "--stream", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "text"
