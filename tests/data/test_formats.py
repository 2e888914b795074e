"""The preference, unpaired and prompt data tasks: detection, conversion, and bad rows reported by line."""

from __future__ import annotations

import json

import pytest

from ftsdk.data.loading import load_dataset
from ftsdk.plugin.errors import DataError
from ftsdk.testing.tiny import preference_rows, prompt_rows, unpaired_rows, write_jsonl

USER = [{"role": "user", "content": "2+2?"}]


def reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def problems(path, task: str) -> str:
    with pytest.raises(DataError) as caught:
        load_dataset(path, task)
    return str(caught.value)


def test_plain_and_chat_preference_pairs(tmp_path):
    plain = load_dataset(write_jsonl(tmp_path / "p.jsonl", preference_rows(3)), "preference")
    assert plain.format == "preference" and set(plain.examples[0]) == {"prompt", "chosen", "rejected"}
    assert isinstance(plain.examples[0]["chosen"], str)
    chat = load_dataset(write_jsonl(tmp_path / "c.jsonl", preference_rows(3, chat=True)), "preference")
    assert chat.format == "chat_preference"
    assert chat.examples[0]["chosen"][0]["role"] == "assistant" and chat.examples[0]["prompt"][0]["role"] == "user"


def test_unpaired_rows_and_csv_labels(tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "u.jsonl", unpaired_rows(4)), "unpaired_preference")
    assert data.format == "unpaired" and [e["label"] for e in data.examples] == [True, False, True, False]
    (tmp_path / "u.csv").write_text("prompt,completion,label\n2+2?,4,true\n2+2?,5,false\n")
    assert [e["label"] for e in load_dataset(tmp_path / "u.csv", "unpaired_preference").examples] == [True, False]
    rows = [{"prompt": USER, "completion": reply("4"), "label": True}]
    assert load_dataset(write_jsonl(tmp_path / "c.jsonl", rows), "unpaired_preference").format == "chat_unpaired"


def test_prompt_rows_keep_their_other_columns_for_reward_functions(tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "p.jsonl", prompt_rows(2)), "prompt")
    assert data.format == "prompt" and set(data.examples[0]) == {"prompt", "answer"}
    chat = load_dataset(write_jsonl(tmp_path / "c.jsonl", [{"prompt": USER, "id": 7}]), "prompt")
    assert chat.format == "chat_prompt" and chat.examples == [{"prompt": USER, "id": 7}]


def test_bad_preference_rows_are_listed_by_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "", "rejected": "b"},
        {"prompt": "q", "chosen": "a"},
        {"prompt": USER, "chosen": "a", "rejected": "b"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    message = problems(path, "preference")
    assert "4 invalid row(s) in preference format" in message
    assert "line 2: chosen and rejected are identical" in message
    assert "line 3: chosen: String should have at least 1 character" in message
    assert "line 4: rejected: Field required" in message
    assert "line 5: prompt: Input should be a valid string" in message


def test_bad_chat_preference_rows_name_the_turn_at_fault(tmp_path):
    rows = [
        {"prompt": USER, "chosen": reply("4"), "rejected": reply("5")},
        {"prompt": USER + reply("4"), "chosen": reply("4"), "rejected": reply("5")},
        {"prompt": USER, "chosen": USER, "rejected": reply("5")},
        {"prompt": USER, "chosen": reply(" "), "rejected": reply("5")},
        {"prompt": USER, "chosen": "4", "rejected": reply("5")},
    ]
    message = problems(write_jsonl(tmp_path / "bad.jsonl", rows), "preference")
    assert "line 2: prompt: must end with a user message" in message
    assert "line 3: chosen: may hold only assistant messages" in message
    assert "line 4: chosen.0: the assistant reply is empty or whitespace-only: nothing to learn" in message
    assert "line 5: chosen: Input should be a valid list" in message


def test_bad_unpaired_and_prompt_rows(tmp_path):
    rows = [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": "a", "label": "maybe"},
            {"prompt": "q", "completion": "a"}]
    message = problems(write_jsonl(tmp_path / "u.jsonl", rows), "unpaired_preference")
    assert "line 2: label: Input should be a valid boolean" in message and "line 3: label: Field required" in message
    rows = [{"prompt": "q"}, {"prompt": ""}, {"question": "q"}]
    message = problems(write_jsonl(tmp_path / "p.jsonl", rows), "prompt")
    assert "line 2: prompt: String should have at least 1 character" in message
    assert "line 3: prompt: Field required" in message


def test_an_sft_file_given_to_a_preference_objective_says_what_is_expected(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": USER + reply("4")}])
    message = problems(path, "preference")
    assert "cannot tell the data format" in message and "chosen" in message and "rejected" in message
