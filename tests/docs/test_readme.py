"""The README cannot rot: its commands are the ones CI runs, and its tour runs (on the tiny model)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def readme_commands():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands().setup_commands()
    assert commands["quickstart"].endswith("ftsdk quickstart") and commands["tests"].endswith("pytest")
    assert commands["tests"] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_ci_runs_readme_command_1_as_read_from_the_readme():
    """CI's newcomer step takes README command 1 from the README itself, in its documented short form."""
    module = readme_commands()
    newcomer = (ROOT / ".ci" / "newcomer").read_text(encoding="utf-8")
    assert "bash .ci/newcomer" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "readme_commands.py\" quickstart --short" in newcomer and "pip install -e ." not in newcomer
    assert module.SHORT_QUICKSTART in README  # the short form is documented
    short = module.short_quickstart(module.setup_commands()["quickstart"])
    assert short.endswith(module.SHORT_QUICKSTART) and short.startswith("python3 -m venv .venv")
    changed = README.replace("pip install -e . &&", "pip install -e . && pip install gguf &&")
    assert "pip install gguf" in module.setup_commands(changed)["quickstart"]  # what the README says is what runs


def test_the_short_quickstart_parses():
    from ftsdk.cli import build_parser

    args = build_parser().parse_args(readme_commands().SHORT_QUICKSTART.split()[1:])
    assert (args.max_steps, args.limit) == (5, 12)


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
    from ftsdk.training.recipe import Recipe
    from ftsdk.training.tuner import Tuner

    recipe = Recipe.from_yaml(ROOT / "examples" / "recipes" / "lora-sft.yaml")
    assert recipe.data.train.is_file() and recipe.data.eval.is_file()
    Tuner.from_recipe(recipe)
