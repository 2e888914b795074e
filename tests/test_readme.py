"""The README cannot rot: its commands are the ones CI runs, and its tour runs (on the tiny model)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(commands) == 2
    quickstart, tests = commands
    assert quickstart.endswith("ftsdk quickstart") and tests.endswith("pytest")
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_tour_runs(tiny_model_dir, chat_data, tmp_path, monkeypatch, capsys):
    tour = code_blocks("python")[0]
    tour = tour.replace('"smollm2-135m"', repr(str(tiny_model_dir)))
    tour = tour.replace('"train.jsonl"', repr(str(chat_data[0]))).replace('"val.jsonl"', repr(str(chat_data[1])))
    tour = tour.replace('"max_length": 256}', '"max_length": 256, "max_steps": 2}')
    monkeypatch.chdir(tmp_path)
    exec(compile(tour, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "first" / "ftsdk.json").exists()
    assert "runs/first" in capsys.readouterr().out


def test_the_recipe_in_examples_validates():
    from ftsdk.config import Recipe
    from ftsdk.tuner import Tuner

    recipe = Recipe.from_yaml(ROOT / "examples" / "recipes" / "lora-sft.yaml")
    assert recipe.data.train.is_file() and recipe.data.eval.is_file()
    Tuner.from_recipe(recipe)
