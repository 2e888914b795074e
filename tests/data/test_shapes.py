"""Data in every shape (issue 14): raw text, multi-turn, tool calls, Parquet/Arrow, folders, datasets sources."""

from __future__ import annotations

import json

import pytest

from ftsdk.data.curate import check
from ftsdk.data.loading import load_dataset
from ftsdk.data.tokenize import IGNORE_INDEX, pack, tokenize_all, tokenize_example
from ftsdk.plugin.errors import DataError
from ftsdk.testing import build_tokenizer, write_jsonl
from tests.data.test_masking import CONVERSATION, trained_text

# ChatML with tools, as Qwen2.5's template renders them (system block listing tools, calls and results in tags)
TOOLS_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}{% if messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] + '\\n\\n' }}{% endif %}{{ '# Tools\\n<tools>' }}"
    "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}{{ '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>' + m['content'] + '</tool_response><|im_end|>\\n' }}"
    "{%- elif m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{%- for c in m.get('tool_calls', []) %}{{ '<tool_call>{\"name\": \"' + c['function']['name'] + '\", "
    "\"arguments\": ' + (c['function']['arguments'] | tojson) + '}</tool_call>' }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def call(name: str = "get_weather", arguments: object = None, id: str | None = "c1") -> dict:
    made = {"type": "function", "function": {"name": name, "arguments": {"city": "Paris"} if arguments is None
                                             else arguments}}
    return made | ({"id": id} if id else {})


TOOL_ROW = {"tools": [WEATHER], "messages": [
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [call()]},
    {"role": "tool", "tool_call_id": "c1", "content": "18C and sunny"},
    {"role": "assistant", "content": "18C and sunny in Paris."},
]}


@pytest.fixture
def tokenizer():
    return build_tokenizer()


# -- multi-turn ----------------------------------------------------------------------------------------------


def test_every_assistant_turn_is_learned_by_default_or_only_the_last(tokenizer):
    assert trained_text(tokenizer, tokenize_example(tokenizer, CONVERSATION, 512)) == [
        "blue<|im_end|>", "green please<|im_end|>"]
    last = tokenize_example(tokenizer, CONVERSATION, 512, turns="last")
    assert trained_text(tokenizer, last) == ["green please<|im_end|>"]
    assert last.input_ids == tokenize_example(tokenizer, CONVERSATION, 512).input_ids


# -- tool calls ----------------------------------------------------------------------------------------------


def test_tool_rows_train_on_calls_and_replies_not_on_results(tokenizer, tmp_path):
    data = load_dataset(write_jsonl(tmp_path / "tools.jsonl", [TOOL_ROW]))
    example = data.examples[0]
    assert data.format == "chat" and example["tools"][0]["function"]["name"] == "get_weather"
    tokenizer.chat_template = TOOLS_TEMPLATE
    tokenized = tokenize_example(tokenizer, example, 1024)
    assert trained_text(tokenizer, tokenized) == [
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>',
        "18C and sunny in Paris.<|im_end|>"]
    full = tokenizer.apply_chat_template(example["messages"], tools=example["tools"], tokenize=False)
    assert tokenizer.decode(tokenized.input_ids) == full and "# Tools" in full and "<tool_response>" in full


def test_tool_call_arguments_may_be_json_text(tmp_path):
    row = json.loads(json.dumps(TOOL_ROW))
    row["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris"}'
    example = load_dataset(write_jsonl(tmp_path / "t.jsonl", [row])).examples[0]
    assert example["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}


def _with(**changes) -> dict:
    row = json.loads(json.dumps(TOOL_ROW))
    for index, message in changes.items():
        row["messages"][int(index[1:])] = message
    return row


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (_with(m1={"role": "assistant", "content": "", "tool_calls": [call("get_time")]}),
         "line 2: messages.1.tool_calls.0: calls 'get_time', which is not among tools (get_weather)"),
        (_with(m1={"role": "assistant", "content": "", "tool_calls": [call(arguments="{city")]}),
         "line 2: messages.1.tool_calls.0.function.arguments: arguments are a string but not JSON"),
        (_with(m1={"role": "assistant", "content": "", "tool_calls": [call(arguments=[1])]}),
         "line 2: messages.1.tool_calls.0.function.arguments: Input should be a valid dictionary"),
        (_with(m1={"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}),
         "line 2: messages.1.tool_calls.0.function.name: Field required"),
        (_with(m1={"role": "assistant", "content": "", "tool_calls": []}),
         "line 2: messages.1.tool_calls: List should have at least 1 item"),
        (_with(m1={"role": "user", "content": "x", "tool_calls": [call()]}),
         "line 2: messages.1: Value error, only assistant messages make tool_calls"),
        (_with(m1={"role": "assistant", "content": "I will look."}),
         "line 2: messages.2: a tool result must follow an assistant message with tool_calls"),
        (_with(m2={"role": "tool", "tool_call_id": "c9", "content": "x"}),
         "line 2: messages.2: tool_call_id 'c9' answers no call of the assistant turn before it (c1)"),
        (_with(m2={"role": "tool"}), "line 2: messages.2: Value error, content is missing"),
    ],
    ids=["unknown-function", "arguments-not-json", "arguments-not-object", "no-name", "no-calls", "user-calls",
         "result-without-call", "wrong-call-id", "result-without-content"],
)
def test_malformed_tool_calls_are_reported_by_line(tmp_path, row, expected):
    with pytest.raises(DataError) as caught:
        load_dataset(write_jsonl(tmp_path / "t.jsonl", [TOOL_ROW, row]))
    assert expected.replace("Value error, ", "") in str(caught.value)


def test_check_reports_tool_rows(tmp_path):
    report = check(write_jsonl(tmp_path / "t.jsonl", [TOOL_ROW, _with(m3={"role": "assistant", "content": "warm"})]))
    assert report.format == "chat" and report.rows == 2 and report.stats["roles"]["tool"] == 2
    [contradiction] = report.contradictions  # one input (tool result included), two replies
    assert contradiction["lines"] == [1, 2] and "tool: 18C and sunny" in contradiction["input"]
    assert '"name": "get_weather"' in contradiction["input"] and report.empty_prompts == []


# -- raw text -------------------------------------------------------------------------------------------------


def test_text_rows_and_txt_files_are_documents(tmp_path):
    (tmp_path / "book.txt").write_text("Chapter one.\nIt begins.\n\n\nChapter two.\n\nThe end.\n")
    data = load_dataset(tmp_path / "book.txt")
    assert data.format == "text" and data.lines == [1, 5, 7]
    assert [e["text"] for e in data.examples] == ["Chapter one.\nIt begins.", "Chapter two.", "The end."]
    rows = load_dataset(write_jsonl(tmp_path / "t.jsonl", [{"text": "a document"}]))
    assert rows.format == "text" and rows.examples == [{"text": "a document"}]


def test_text_is_packed_with_every_token_learned_and_needs_no_template(tokenizer):
    base = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    assert not base.chat_template
    documents = [{"text": "the color of the sky is blue " * 5}, {"text": "grass is green"}, {"text": "snow"}]
    blocks, dropped = tokenize_all(base, documents, max_length=16, assistant_only=True)
    stream = [i for d in documents for i in base(d["text"], add_special_tokens=False)["input_ids"] + [base.eos_token_id]]
    assert dropped == 0 and [i for b in blocks for i in b.input_ids] == stream
    assert all(len(b.input_ids) == 16 for b in blocks[:-1]) and 0 < len(blocks[-1].input_ids) <= 16
    assert all(b.labels == b.input_ids for b in blocks) and IGNORE_INDEX not in blocks[0].labels


def test_pack_cuts_exact_blocks():
    assert [b.input_ids for b in pack([[1, 2, 3], [4], [5, 6, 7, 8, 9]], 4)] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_conversations_still_need_a_template(tokenizer):
    base = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    with pytest.raises(DataError, match="no chat template"):
        tokenize_all(base, [CONVERSATION], 64, True)


def test_a_template_that_drops_tool_calls_is_refused(tokenizer):
    tokenizer.chat_template = build_tokenizer().chat_template  # plain ChatML: no tool calls
    with pytest.raises(DataError, match="does not render the tool call 'get_weather'"):
        tokenize_example(tokenizer, {"messages": TOOL_ROW["messages"], "tools": TOOL_ROW["tools"]}, 512)
