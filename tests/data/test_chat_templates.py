"""Chosen chat templates: built-ins and Jinja files, checked before loading, and the mask works for each."""

from __future__ import annotations

import pytest

from ftsdk.data.templates import BUILTIN_TEMPLATES, load_chat_template
from ftsdk.data.tokenize import tokenize_example
from ftsdk.plugin.errors import ConfigError
from ftsdk.testing import build_tokenizer
from tests.data.test_shapes import TOOL_ROW
from tests.data.test_masking import CONVERSATION, trained_text

END_OF_TURN = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "</s>",
               "gemma": "<end_of_turn>", "phi3": "<|end|>"}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_every_builtin_is_covered():
    assert set(BUILTIN_TEMPLATES) == set(END_OF_TURN)


@pytest.mark.parametrize("name", sorted(END_OF_TURN))
def test_the_assistant_mask_works_for_every_builtin(tokenizer, name):
    tokenizer.chat_template = load_chat_template(name)
    tokenizer.eos_token = "</s>" if name == "mistral" else tokenizer.eos_token
    example = tokenize_example(tokenizer, CONVERSATION, 1024)
    assert trained_text(tokenizer, example) == [f"blue{END_OF_TURN[name]}", f"green please{END_OF_TURN[name]}"]
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert tokenizer.decode(example.input_ids) == full and "reply with one word only" in full


@pytest.mark.parametrize("name", ["chatml", "qwen", "llama3"])
def test_tool_capable_builtins_train_on_calls(tokenizer, name):
    tokenizer.chat_template = load_chat_template(name)
    runs = trained_text(tokenizer, tokenize_example(tokenizer, {"messages": TOOL_ROW["messages"],
                                                                "tools": TOOL_ROW["tools"]}, 2048))
    assert len(runs) == 2 and "get_weather" in runs[0] and "Paris" in runs[0] and "18C and sunny" not in runs[0]


def test_a_jinja_file_is_read_relative_to_its_base(tmp_path):
    (tmp_path / "t.jinja").write_text(BUILTIN_TEMPLATES["phi3"])
    assert load_chat_template("t.jinja", tmp_path) == BUILTIN_TEMPLATES["phi3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "is neither a built-in nor a file"),
        ("{% for m in messages %}{{ m['content'] }", "does not render"),
        ("{% for m in messages %}{{ raise_exception('no system role') }}{% endfor %}", "no system role"),
        ("{% for m in messages if m['role'] != 'system' %}{{ m['content'] }}{% endfor %}", "drops turns"),
        ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}{{ m['content'] }}|{% endif %}"
         "{% endfor %}", "drops turns"),
        ("{% for m in messages %}{{ m['role'] + ':' + m['content'] + '|' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ 'assistant says' }}{% endif %}", "cannot be located"),
    ],
    ids=["missing-file", "syntax", "raises", "drops-system", "rewrites-history", "wrong-generation-prompt"],
)
def test_unusable_templates_are_refused_before_loading(tmp_path, text, message):
    if text is not None:
        (tmp_path / "t.jinja").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_chat_template(str(tmp_path / "t.jinja"))


def test_a_base_model_trains_with_a_chosen_template_saved_with_the_output(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from ftsdk import Tuner
    from ftsdk.artifacts import read_manifest
    from ftsdk.plugin.errors import DataError
    from ftsdk.testing import write_jsonl
    from tests.data.test_training_on_shapes import TRAINING, with_template

    base = with_template(tiny_model_dir, tmp_path / "base", None)
    data = write_jsonl(tmp_path / "d.jsonl", [{"messages": CONVERSATION}] * 4)
    with pytest.raises(DataError, match="choose one: chat_template: chatml"):
        Tuner(str(base), training=TRAINING | {"max_length": 128}).fit(data, output_dir=tmp_path / "refused")
    tuner = Tuner(str(base), chat_template="llama3", training=TRAINING | {"max_length": 512})
    result = tuner.fit(data, output_dir=tmp_path / "o")
    assert AutoTokenizer.from_pretrained(result.output_dir).chat_template == BUILTIN_TEMPLATES["llama3"]
    assert read_manifest(result.output_dir)["chat_template"] == "llama3"
    reopened = Tuner.load(result.output_dir)
    assert reopened.tokenizer.chat_template == BUILTIN_TEMPLATES["llama3"]


def test_recipes_name_a_template_checked_before_loading(tmp_path, no_model_loading):
    from ftsdk import Tuner

    (tmp_path / "mine.jinja").write_text(BUILTIN_TEMPLATES["gemma"])
    (tmp_path / "r.yaml").write_text("data: {train: d.jsonl}\noutput_dir: out\nchat_template: mine.jinja\n")
    assert Tuner.from_recipe(tmp_path / "r.yaml").chat_template == BUILTIN_TEMPLATES["gemma"]
    (tmp_path / "r.yaml").write_text("data: {train: d.jsonl}\noutput_dir: out\nchat_template: vicuna\n")
    with pytest.raises(ConfigError, match="'vicuna' is neither a built-in nor a file"):
        Tuner.from_recipe(tmp_path / "r.yaml")
