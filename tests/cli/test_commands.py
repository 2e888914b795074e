"""The `ftsdk` command: train from a recipe, schema, errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import yaml

from ftsdk.cli import main


def write_recipe(folder, **overrides) -> str:
    recipe = {
        "model": "MODEL",
        "adapter": "lora",
        "adapter_config": {"r": 4, "dropout": 0.0},
        "objective": "sft",
        "training": {"max_steps": 3, "learning_rate": 5e-3, "batch_size": 8, "logging_steps": 1},
        "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
        "output_dir": "out",
    } | overrides
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture
def recipe_folder(tmp_path, chat_data, tiny_model_dir):
    for source, name in zip(chat_data, ("train.jsonl", "eval.jsonl")):
        (tmp_path / name).write_text(source.read_text())
    return tmp_path, str(tiny_model_dir)


def test_train_from_a_recipe_with_paths_relative_to_it(recipe_folder, capsys, monkeypatch, tmp_path_factory):
    folder, model = recipe_folder
    recipe = write_recipe(folder, model=model)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert main(["train", recipe]) == 0
    printed = json.loads(_last_json(capsys))
    assert printed["output_dir"] == str(folder / "out")
    assert (folder / "out" / "adapter_model.safetensors").exists()
    assert main(["train", recipe]) == 2  # the output exists now
    assert "is not empty" in capsys.readouterr().err
    assert main(["train", recipe, "--overwrite"]) == 0


def _last_json(capsys) -> str:
    out = capsys.readouterr().out
    return out[out.index("{\n") :]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"adapter": "lroa"}, "did you mean 'lora'?"),
        ({"adapter_config": {"rank": 8}}, "adapter_config.rank: Extra inputs are not permitted"),
        ({"training": {"batch_size": 0}}, "recipe.yaml: training.batch_size"),
        ({"data": {"train": "missing.jsonl"}}, "data file not found"),
        ({"colour": "blue"}, "recipe.yaml: colour: Extra inputs are not permitted"),
    ],
)
def test_bad_recipes_fail_fast_with_the_place_named(recipe_folder, capsys, overrides, expected, monkeypatch):
    folder, model = recipe_folder
    monkeypatch.setattr("ftsdk.models.loading.resolve", lambda *a: pytest.fail("loaded a model before validating"))
    assert main(["train", write_recipe(folder, model=model, **overrides)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ftsdk: error:") and expected in error


def test_schema_prints_the_config_json_schema(capsys):
    assert main(["schema", "adapter", "lora"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["r"]["default"] == 16 and schema["additionalProperties"] is False


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["kind", "name", "distribution", "version", "available", "summary"]
    assert any(line.split()[:2] == ["adapter", "lora"] for line in lines)
