"""Data checks and preparation: PII, duplicates, contradictions, filters, leak-free splits, CLI."""

from __future__ import annotations

import json

import pytest

from ftsdk.artifacts import read_manifest
from ftsdk.cli import main
from ftsdk.data.curate import check, prepare
from ftsdk.data.duplicates import exact_groups, near_groups
from ftsdk.data.pii import find_pii, redact
from ftsdk.data.split import split_indices
from ftsdk.plugin.errors import ConfigError, OutputExistsError
from ftsdk.testing import build_tokenizer, write_jsonl


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "system", "content": "route it"}, {"role": "user", "content": user},
                         {"role": "assistant", "content": reply}]}


ROWS = [
    chat("my card was charged twice for order 1", "billing"),         # line 1
    chat("My card was charged twice for order 1!", "billing"),        # 2: exact duplicate of 1
    chat("where is my parcel it has been a week now", "shipping"),    # 3
    chat("where is my parcel it has been a week now", "returns"),     # 4: contradicts 3
    chat("the tablet will not charge since the update yesterday evening", "technical"),  # 5
    chat("the tablet will not charge since the updates yesterday evening", "technical"),  # 6: near dup of 5
    chat("mail me at jane@example.com or +44 20 7946 0958", "account"),  # 7: PII
    chat("card 4111 1111 1111 1111 please refund", "billing"),       # 8: card
    chat("a question with a one-letter answer", "k"),               # 9: short output
    chat("write a long answer", "word " * 60 + "and then it stops in the middle of"),  # 10: truncated
] + [chat(f"unique sales question number {i} about laptops and {i} tablets", "sales") for i in range(20)]


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("reach me: jane.doe+x@mail.example.org", ["email"]),
        ("call +1 (415) 555-2671 today", ["phone"]),
        ("visa 4111 1111 1111 1111", ["card"]),
        ("not a card 4111 1111 1111 1112", []),
        ("IBAN GB82 WEST 1234 5698 7654 32", ["iban"]),
        ("IBAN GB82 WEST 1234 5698 7654 33", []),
        ("server at 10.0.0.12", ["ip_address"]),
        ("order #LM-48213 placed 2024-03-01", []),
    ],
)
def test_pii_kinds_are_validated(text, kinds):
    assert [m.kind for m in find_pii(text)] == kinds


def test_redaction_keeps_the_rest_of_the_text():
    assert redact("write to a@b.io, card 4111-1111-1111-1111.") == "write to [EMAIL], card [CARD]."


def test_duplicate_groups():
    texts = ["Hello there, friend", "hello there friend!", "a b c d e f g h i j", "a b c d e f g h i k", "other"]
    assert exact_groups(texts) == [[0, 1]]
    assert near_groups(texts, threshold=0.6) == [[0, 1], [2, 3]]


def test_split_is_seeded_stratified_and_keeps_groups_together():
    labels = ["a"] * 60 + ["b"] * 40
    first = split_indices(100, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3, strata=labels, groups=[[0, 1, 2]])
    assert first == split_indices(100, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3, strata=labels,
                                  groups=[[0, 1, 2]])
    assert {k: len(v) for k, v in first.items()} == {"train": 80, "val": 10, "test": 10}
    assert {k: sum(labels[i] == "b" for i in v) for k, v in first.items()} == {"train": 32, "val": 4, "test": 4}
    assert sum(all(i in split for i in (0, 1, 2)) for split in first.values()) == 1
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, {"train": 0.9, "test": 0.2})


def test_check_reports_every_problem_by_line(tmp_path):
    report = check(write_jsonl(tmp_path / "d.jsonl", ROWS), tokenizer=build_tokenizer(), max_length=60,
                   min_output_chars=2)
    assert report.rows == 30 and report.stats["roles"]["assistant"] == 30
    assert report.exact_duplicates == [[1, 2]]
    assert [5, 6] in report.near_duplicates
    assert report.contradictions == [{"input": "user: where is my parcel it has been a week now", "lines": [3, 4],
                                      "outputs": ["returns", "shipping"]}]
    assert report.pii == {"email": [7], "phone": [7], "card": [8]}
    assert report.short_outputs == [9] and report.truncated_outputs == [10]
    assert 10 in report.too_long and 1 not in report.too_long
    assert report.stats["tokens"]["max"] > 60
    assert "labels" not in report.stats  # the long answer makes it free text


def test_prepare_removes_flagged_rows_and_never_leaks_near_duplicates(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", ROWS)
    prepared = prepare(source, tmp_path / "prepared", options={"redact_pii": True, "drop_truncated": True, "min_output_chars": 2,
                                                                "split": {"train": 0.5, "val": 0.25, "test": 0.25}})
    assert prepared.removed == {"exact duplicate": [2], "contradiction": [3, 4], "output too short": [9],
                                "output truncated": [10]}
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in prepared.files.items()}
    assert sum(len(r) for r in rows.values()) == 30 - 5
    users = {name: [r["messages"][1]["content"] for r in split] for name, split in rows.items()}
    holding_five = [name for name, texts in users.items() if ROWS[4]["messages"][1]["content"] in texts]
    holding_six = [name for name, texts in users.items() if ROWS[5]["messages"][1]["content"] in texts]
    assert holding_five == holding_six
    everything = json.dumps(rows)
    assert "jane@example.com" not in everything and "[EMAIL]" in everything and "[CARD]" in everything
    manifest = read_manifest(tmp_path / "prepared")
    assert manifest["kind"] == "data" and manifest["source"]["rows"] == 30
    assert manifest["removed"] == {"exact duplicate": 1, "contradiction": 2, "output too short": 1,
                                   "output truncated": 1}
    assert (tmp_path / "prepared" / "report.md").read_text().startswith("# Data report: d.jsonl")
    with pytest.raises(OutputExistsError):
        prepare(source, tmp_path / "prepared")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        prepare(source, tmp_path / "other", options={"max_length": 64})


def test_cli_check_and_prepare(tmp_path, capsys):
    source = write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert main(["data", "check", str(source), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exact_duplicates"] == [[1, 2]]
    assert main(["data", "prepare", str(source), "--out", str(tmp_path / "out"), "--drop-near-duplicates"]) == 0
    printed = capsys.readouterr().out
    assert "near duplicate: 2 (lines 2, 6)" in printed and "train:" in printed
    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 2
