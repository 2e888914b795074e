"""Hostile or careless config files (recipes, merge configs, chains) get one clear ftsdk error, fast, and write
nothing: strict numbers, bounded YAML (alias bombs, nesting, huge integers, invalid text), short messages, absolute
chain paths kept as given, and chain input names that cannot leave the workdir."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ftsdk.chain.config import load_chain_config
from ftsdk.cli import main
from ftsdk.merging.config import load_merge_config
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.settings import MAX_QUOTED, quote
from ftsdk.safe_yaml import load_yaml
from ftsdk.training.recipe import Recipe

RECIPE = """\
model: smollm2-135m
adapter: lora
training:
  {field}: {value}
data:
  train: train.jsonl
output_dir: out
"""

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{new}: &{new} [*{old},*{old},*{old},*{old},*{old},*{old},*{old},*{old},*{old}]\n"
    for old, new in zip("abcdefgh", "bcdefghi", strict=True)
)
#: the same bomb through merge keys, which PyYAML copies while it constructs the mappings
MERGE_BOMB = "l0: &l0 {a: 1, b: 2}\n" + "".join(
    f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * 9)}]}}\n" for i in range(1, 10)
)


def write_recipe(tmp_path: Path, field: str, value: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(field=field, value=value), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", "true", "batch_size: a number is required, not true/false"),
        ("epochs", "false", "epochs: a number is required"),
        ("threads", "1.0e+11", "threads: a whole number is required, not a float"),
        ("threads", "100000000000", "threads: Input should be less than or equal to 1024"),
        ("seed", "1.0e+23", "seed: a whole number is required"),
        ("seed", "4294967296", "seed: Input should be less than or equal to 4294967295"),
        ("seed", "0x" + "f" * 5000, "got <an integer of about 6020 digits>"),
        ("seed", "-1", "seed: Input should be greater than or equal to 0"),
        ("max_steps", "10000000000000", "max_steps: Input should be less than or equal to 1000000000"),
        ("epochs", ".nan", "epochs: Input should be a finite number"),
        ("max_grad_norm", ".inf", "max_grad_norm: Input should be a finite number"),
        ("gradient_checkpointing", "1", "gradient_checkpointing: true or false is required"),
        ("gradient_checkpointing", '"no"', "gradient_checkpointing: true or false is required"),
    ],
)
def test_recipe_numbers_are_strict_and_bounded(tmp_path, field, value, message):
    path = write_recipe(tmp_path, field, value)
    with pytest.raises(ConfigError) as caught:
        Recipe.from_yaml(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert len(str(caught.value)) < 2000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('data: {train: "a\\0b"}\noutput_dir: out\n', "data.train: text cannot contain a NUL character"),
        ('model: "x\\0"\ndata: {train: t.jsonl}\noutput_dir: out\n', "model.name: text cannot contain a NUL"),
        ('data: {train: t.jsonl}\noutput_dir: ""\n', "output_dir: a path cannot be empty"),
    ],
)
def test_recipe_paths_and_names_are_real_text(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        Recipe.from_yaml(path)


def test_recipe_good_numbers_still_pass(tmp_path):
    assert Recipe.from_yaml(write_recipe(tmp_path, "epochs", "2")).training.epochs == 2.0  # an int for a float
    assert Recipe.from_yaml(write_recipe(tmp_path, "seed", "4294967295")).training.seed == 2**32 - 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BILLION_LAUGHS, "line 6, column 4: aliases expand this document by more than 100,000 values"),
        (MERGE_BOMB, "aliases expand this document by more than 100,000 values"),
        ("a: " + "[" * 5000 + "]" * 5000, "line 1, column 67: nested more than 64 levels deep"),
        ("a: &a [1, *a]", "an alias refers to the collection that contains it"),
        ("a: 1\nb: " + "7" * 5000, "line 2, column 4: cannot read this value"),
        ("a: 2020-13-45", "line 1, column 4: cannot read this value: month must be in 1..12"),
        ('a: "\\ud800"', "lone surrogate"),
        ('a: "\\U00110000"', "line 1, column 7: cannot read this text: chr() arg not in range"),
        ('a: "\\U' + "9" * 40 + '"', "cannot read this text: Python int too large"),
        ("a: *nothing", "found undefined alias"),
        ("a: 1\n---\nb: 2", "expected a single document"),
    ],
)
def test_yaml_within_limits(text, message):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="^f.yaml") as caught:
        load_yaml(text, "f.yaml")
    assert message in str(caught.value)
    assert time.perf_counter() - start < 5


def test_yaml_anchors_and_merge_keys_still_work():
    assert load_yaml("base: &b {x: 1}\nc: {<<: *b, y: 2}\nl: [*b, *b]", "f.yaml") == {
        "base": {"x": 1}, "c": {"x": 1, "y": 2}, "l": [{"x": 1}, {"x": 1}]}


def test_yaml_files_not_utf8_or_too_large(tmp_path, monkeypatch):
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("model: x\n", encoding="utf-16")
    with pytest.raises(ConfigError, match=r"utf16.yaml: not UTF-8 text \(byte 0"):
        Recipe.from_yaml(utf16)
    monkeypatch.setattr("ftsdk.safe_yaml.MAX_YAML_BYTES", 100)
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 100, encoding="utf-8")
    with pytest.raises(ConfigError, match="500 bytes is too large for a merge config"):
        load_merge_config(big)


def test_quoted_values_are_short_whatever_they_are():
    assert quote(10**5000) == "<an integer of about 5000 digits>"
    nested: list = []
    for _ in range(1000):
        nested = [nested] * 10
    for value in ("x" * 10**6, ["y" * 1000] * 10**5, nested, {str(i): i for i in range(10**5)}):
        assert len(quote(value)) <= MAX_QUOTED


def test_billion_laughs_recipe_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("data: {train: t.jsonl}\noutput_dir: out\nadapter_config:\n" + "".join(
        "  " + line + "\n" for line in BILLION_LAUGHS.splitlines()), encoding="utf-8")
    start = time.perf_counter()
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ftsdk: error: {path}, line 9") and "Traceback" not in err
    assert time.perf_counter() - start < 10 and sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_a_bad_recipe_on_the_command_line_writes_nothing(tmp_path, capsys):
    path = write_recipe(tmp_path, "batch_size", "true")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ftsdk: error: invalid {path}:\n  {path}: training.batch_size: a number is required")
    assert "Traceback" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_long_values_are_cut_in_messages(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(f"method: linear\nmodels: [{{model: a}}]\ndtype: {'x' * 100_000}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dtype: Input should be .*xxx\.\.\.") as caught:
        load_merge_config(path)
    assert len(str(caught.value)) < 1000


def test_merge_config_numbers_are_strict(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("method: linear\nmodels: [{model: a}]\nthreads: 1.0e+11\noverwrite: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_merge_config(path)
    assert "threads: a whole number is required" in str(caught.value)
    assert "overwrite: true or false is required" in str(caught.value)


def test_chain_absolute_paths_are_kept(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    chain_file = tmp_path / "chains" / "c.yaml"
    chain_file.parent.mkdir()
    chain_file.write_text(f"""\
workdir: {elsewhere / "work"}
inputs: {{adapter: {elsewhere / "lora"}, base: smollm2-135m, rel: runs/x}}
steps:
  - {{step: train, name: t, recipe: {elsewhere / "r.yaml"}, output: {elsewhere / "trained"}}}
  - {{step: merge, name: m, config: {elsewhere / "m.yaml"}}}
  - {{step: quantize, name: q, method: bnb, calibration: {{data: {elsewhere / "cal.jsonl"}}}}}
  - {{step: evaluate, texts: {{data: {elsewhere / "texts.jsonl"}}}, output: rel-out}}
""", encoding="utf-8")
    config = load_chain_config(chain_file)
    train, merge, quantize, evaluate = config.steps
    assert config.workdir == elsewhere / "work"
    assert config.inputs == {"adapter": str(elsewhere / "lora"), "base": "smollm2-135m",
                             "rel": str(chain_file.parent / "runs/x")}
    assert (train.recipe, train.output, merge.config) == (elsewhere / "r.yaml", elsewhere / "trained", elsewhere / "m.yaml")
    assert quantize.calibration.data == elsewhere / "cal.jsonl" and evaluate.texts.data == elsewhere / "texts.jsonl"
    assert evaluate.output == chain_file.parent / "rel-out" and merge.output is None


@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".hidden", "..", "a\\b", "", "x" * 129])
def test_chain_input_names_follow_the_step_name_rules(tmp_path, name, capsys):
    with pytest.raises(ConfigError, match=r"invalid chain:\n  chain.inputs"):
        load_chain_config({"inputs": {name: "smollm2-135m"}})
    chain_file = tmp_path / "c.yaml"
    chain_file.write_text("steps: [{step: export}]\n", encoding="utf-8")
    assert main(["chain", str(chain_file), "--input", f"{name}=smollm2-135m", "--dry-run"]) == 2
    err = capsys.readouterr().err
    expected = "ftsdk: error: invalid chain:\n  chain.inputs" if name else "ftsdk: error: --input '=smollm2-135m'"
    assert err.startswith(expected) and "Traceback" not in err


def test_chain_step_labels_stay_short():
    with pytest.raises(ConfigError) as caught:
        load_chain_config({"steps": [{"step": ["t" * 10_000] * 1000, "name": "n" * 10_000}]})
    assert len(str(caught.value)) < 600 and "unknown step type" in str(caught.value)
