"""Malformed data files get one DataError naming the file and the line, never a traceback (issue 13).

Also: empty turns (an empty reply is an error, an empty prompt a finding), and a property test that
generated rows and files only ever load or raise DataError.
"""

from __future__ import annotations

import codecs
import csv
import json

import pytest

from ftsdk.cli import main
from ftsdk.data import reading
from ftsdk.data.curate import check, report_markdown
from ftsdk.data.loading import load_dataset
from ftsdk.plugin.errors import DataError
from ftsdk.testing import write_jsonl


def refused(path, task: str = "sft") -> str:
    with pytest.raises(DataError) as caught:
        load_dataset(path, task)
    assert str(path) in str(caught.value)
    return str(caught.value)


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


# -- empty turns (issue 12, item 6) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (chat("q", ""), "line 2: messages.1: the assistant reply is empty or whitespace-only: nothing to learn"),
        (chat("q", " \n\t"), "line 2: messages.1: the assistant reply is empty or whitespace-only"),
        ({"messages": [*chat("q", "a")["messages"], {"role": "user", "content": "more"},
                       {"role": "assistant", "content": " "}]}, "line 2: messages.3: the assistant reply is empty"),
        ({"instruction": "say", "output": "  "}, "line 2: output: is empty or whitespace-only"),
        ({"prompt": "say", "completion": "\n"}, "line 2: completion: is empty or whitespace-only"),
        ({"text": "   "}, "line 2: text: is empty or whitespace-only"),
    ],
    ids=["chat-empty", "chat-whitespace", "chat-middle-turn", "alpaca", "prompt-completion", "text"],
)
def test_an_empty_reply_is_an_error_with_its_line(tmp_path, row, expected):
    first = {key: value for key, value in row.items()}
    good = {"messages": chat("q", "a")["messages"]} if "messages" in row else {
        k: "x" for k in first}
    message = refused(write_jsonl(tmp_path / "d.jsonl", [good, row]))
    assert expected in message


def test_an_empty_prompt_is_a_finding_with_its_line(tmp_path):
    rows = [chat("fine", "a"), chat("", "b"), chat("  ", "c"),
            {"messages": [{"role": "system", "content": ""}, *chat("q", "d")["messages"]]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    report = check(path)
    assert report.rows == 4 and report.empty_prompts == [2, 3, 4]
    assert "## empty or whitespace-only prompts (user, system or tool turns): 1\n- 2, 3, 4" in report_markdown(report)
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "", "output": "x"}, {"instruction": "y", "output": "z"}])
    assert check(alpaca).empty_prompts == [1]


# -- files that must be refused cleanly (issue 13) --------------------------------------------------------------


def test_csv_rows_with_extra_or_missing_fields_are_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion\nwhat is 2+2,four, definitely not five\n"a, quoted","fine"\nlonely\n')
    message = refused(path)
    assert "line 2: 3 fields, but the header has 2 columns" in message and "must be quoted" in message
    assert "line 4: 1 fields, but the header has 2 columns" in message and "line 3" not in message


def test_csv_line_numbers_count_quoted_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion\n"two\nlines",a\nq,a,extra\n')
    assert "line 4: 3 fields" in refused(path)


def test_csv_repeated_header_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion,prompt\nq,a,b\n")
    assert "line 1: the header names column(s) 'prompt' more than once" in refused(path)


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"prompt,completion\nq,a\n")
    data = load_dataset(path)
    assert data.format == "prompt_completion" and data.raw == [{"prompt": "q", "completion": "a"}]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read(tmp_path, encoding):
    path = tmp_path / "d.jsonl"
    text = json.dumps(chat("café?", "ja ☕"), ensure_ascii=False) + "\n"
    bom = {"utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    path.write_bytes(bom + text.encode(encoding))
    assert load_dataset(path).examples[0][1]["content"] == "ja ☕"


def test_utf16_without_byte_order_mark_is_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes((json.dumps(chat("q", "a")) + "\n").encode("utf-16-le"))
    assert "holds NUL bytes, so it is not UTF-8 text" in refused(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json", ".txt"])
def test_invalid_utf8_names_its_line(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    lines = {".jsonl": [json.dumps(chat("q", "a")), json.dumps(chat("q", "b")), '{"prompt": "caf\xe9"}'],
             ".csv": ["prompt,completion", "q,a", "caf\xe9,b"],
             ".json": ["[", json.dumps(chat("q", "a")) + ",", '{"prompt": "caf\xe9"}]'],
             ".txt": ["one", "", "caf\xe9"]}[suffix]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    message = refused(path)
    assert "line 3 is not valid UTF-8 (byte 0xe9 at column" in message and "iconv" in message


def test_deep_nesting_is_refused_by_line(tmp_path):
    path = tmp_path / "d.jsonl"
    deep = '{"prompt": "q", "completion": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    medium = '{"prompt": "q", "completion": "a", "x": ' + "[" * 40 + "]" * 40 + "}"
    path.write_text("\n".join([json.dumps({"prompt": "q", "completion": "a"}), deep, medium]) + "\n")
    message = refused(path)
    assert f"line 2: not usable JSON (nested deeper than {reading.MAX_DEPTH} levels)" in message
    assert f"line 3: nested deeper than {reading.MAX_DEPTH} levels" in message
    whole = tmp_path / "d.json"
    whole.write_text("[" + deep + "]")
    assert "nested deeper than" in refused(whole)


def test_integers_over_4300_digits_are_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "q", "completion": "a"}) + '\n{"prompt": "q", "n": ' + "7" * 5000 + "}\n")
    assert "line 2: not usable JSON (a number with more than 4,300 digits)" in refused(path)


def test_long_csv_fields_are_read_and_overlong_ones_refused(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["prompt", "completion"], ["q", "long " * 40_000]])  # 200 KB > csv's 128 KiB
    assert len(load_dataset(path).raw[0]["completion"]) == 200_000
    before = csv.field_size_limit()
    monkeypatch.setattr(reading, "CSV_FIELD_LIMIT", 1000)
    message = refused(path)
    assert "line 2: not valid CSV (field larger than field limit (1000))" in message
    assert csv.field_size_limit() == before  # the process-wide limit is restored


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_lone_surrogate_fails_the_check(tmp_path, suffix, capsys):
    path = tmp_path / f"d{suffix}"
    rows = [chat("q", "a"), chat("q", "broken \ud800 half")]
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    unit = "line" if suffix == ".jsonl" else "row"
    assert f"{unit} 2: holds a lone surrogate U+D800" in refused(path)
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftsdk: error:") and "lone surrogate" in err and "Traceback" not in err


def test_a_folder_is_not_mistaken_for_a_missing_file(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "holds no data files" in refused(tmp_path / "empty")


def test_a_file_without_one_readable_row_lists_why(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "caf\\ud800"}\n[1]\n{broken\n')
    message = refused(path)
    assert "3 invalid row(s)" in message and "line 1: holds a lone surrogate" in message
    assert "line 2: expected a JSON object, got list" in message and "line 3: not valid JSON" in message


def test_prompt_rows_keep_any_extra_columns_through_the_check(tmp_path):
    rows = [{"prompt": "2+2?", "completion": None, "text": None, "messages": [], "answer": [1, [2]]},
            {"prompt": "3+3?", "completion": [{"x": 1}], "text": "t", "messages": [{"role": "user"}]}]
    report = check(write_jsonl(tmp_path / "p.jsonl", rows), "prompt")
    assert report.rows == 2 and report.format == "prompt"
