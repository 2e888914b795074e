"""Every script, recipe, merge config and chain in examples/ is checked, and run on tiny models.

The examples name the real default model (``smollm2-135m``) and folders a user's earlier runs would have made
(``runs/support-tuned``...). The tests keep the files as users see them and change only where they run:

- recipes are read with ``Recipe.from_yaml`` (what ``ftsdk train`` does), then the model becomes the tiny one,
  training stops after 2 steps (generation lengths capped at 8 tokens), data files the repository lacks are
  filled with rows of the objective's task, and the output goes to a temporary folder; the working directory
  is a copy of the repository's layout (``examples/rewards.py``), as the recipes expect;
- merge configs are copied into a temporary ``examples/merges/`` with the model alias replaced by the tiny
  model, beside ``runs/`` holding the fine-tunes (or LoRA adapters) they name, made on the fly;
- chains are validated.

``FTSDK_DOCS_MODEL=smollm2-135m pytest -m "slow or not slow" tests/docs/test_examples.py`` runs them on the real
default model instead (any model ``ftsdk.models.loading.resolve`` accepts).
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftsdk.testing.tiny import (
    TinySpec,
    build_tiny_model,
    preference_rows,
    prompt_rows,
    unpaired_rows,
    write_jsonl,
)
from ftsdk.training.recipe import Recipe
from tests.docpages import ROOT

EXAMPLES = ROOT / "examples"
RECIPES = sorted((EXAMPLES / "recipes").glob("*.yaml"))
MERGES = sorted((EXAMPLES / "merges").glob("*.yaml"))
CHAINS = sorted((EXAMPLES / "chains").glob("*.yaml"))
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
MODEL_VARIABLE = "FTSDK_DOCS_MODEL"
#: recipes quick enough on the tiny model for every test run; the others run with -m slow
FAST_RECIPES = {"lora-sft.yaml"}
#: per-step generation lengths capped for the tiny runs, where an objective has them
GENERATION_CAPS = {"max_completion_length": 8, "max_new_tokens": 8}
ROWS_OF_TASK = {"preference": preference_rows, "prompt": prompt_rows, "unpaired_preference": unpaired_rows}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def example_model(tiny: Path) -> str:
    """The model the examples run on: ``$FTSDK_DOCS_MODEL`` when set, else the tiny one."""
    return os.environ.get(MODEL_VARIABLE) or str(tiny)


# -- scripts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_script_runs(script):
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_reward_functions_score_completions():
    rewards = runpy.run_path(str(EXAMPLES / "rewards.py"))
    prompts, completions, answer = ["2+2?", "sky?"], ["4", "it is blue"], ["4", "blue"]
    assert rewards["exact_answer"](prompts, completions, answer=answer) == [1.0, 0.0]
    assert rewards["contains_answer"](prompts, completions, answer=answer) == [1.0, 1.0]
    assert rewards["brevity"](prompts, completions) == [0.5, 0.25]
    assert rewards["letter_e"](prompts, ["eel", "xyz"]) == [2 / 3, 0.0]


@pytest.mark.slow
def test_the_example_plugin_package_passes_its_own_tests():
    package = EXAMPLES / "ftsdk-last-blocks"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
                          capture_output=True, text=True, cwd=package, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


# -- recipes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipe_validates(path, monkeypatch):
    from ftsdk.training.tuner import Tuner

    monkeypatch.chdir(ROOT)  # the recipes say: run from the repository root
    recipe = Recipe.from_yaml(path)
    Tuner.from_recipe(recipe)  # plugins exist, every option is valid
    assert recipe.output_dir.is_absolute()


def scaled_down(recipe: Recipe, model: str, workspace: Path) -> Recipe:
    """The recipe on ``model`` for two steps, missing data filled with rows of the task, output in ``workspace``."""
    from ftsdk import plugins

    task = plugins.get("objective", recipe.objective).cls.data_task
    data = recipe.data
    if not data.train.is_file():
        data = data.model_copy(update={"train": write_jsonl(workspace / "data" / data.train.name,
                                                            ROWS_OF_TASK[task](16, seed=1))})
    if data.eval is not None and not data.eval.is_file():
        data = data.model_copy(update={"eval": write_jsonl(workspace / "data" / f"eval-{data.eval.name}",
                                                           ROWS_OF_TASK[task](8, seed=2))})
    training = recipe.training.model_copy(update={"max_steps": 2, "gradient_accumulation": 1})
    objective_config = {key: min(value, GENERATION_CAPS[key]) if key in GENERATION_CAPS else value
                        for key, value in recipe.objective_config.items()}
    return recipe.model_copy(update={
        "model": recipe.model.model_copy(update={"name": model}), "training": training, "data": data,
        "objective_config": objective_config, "output_dir": workspace / "out" / recipe.output_dir.name,
    })


def run_recipe(path: Path, model: str, workspace: Path, output_dir: Path | None = None) -> Path:
    """Train the scaled-down recipe in ``workspace`` (the working directory); return its output folder."""
    from ftsdk.training.tuner import Tuner

    recipe = scaled_down(Recipe.from_yaml(path), model, workspace)
    reward_model = recipe.objective_config.get("reward_model")
    if reward_model and not (workspace / reward_model).exists():  # made by another example recipe first
        maker = next(p for p in RECIPES if Recipe.from_yaml(p).output_dir.name == Path(reward_model).name)
        run_recipe(maker, model, workspace, output_dir=workspace / reward_model)
    result = Tuner.from_recipe(recipe).fit(recipe.data.train, eval_data=recipe.data.eval,
                                           output_dir=output_dir or recipe.output_dir)
    assert (result.output_dir / "ftsdk.json").is_file()
    return result.output_dir


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A working directory laid out like the repository root, as the recipes expect."""
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLES / "rewards.py", tmp_path / "examples" / "rewards.py")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.name, marks=() if p.name in FAST_RECIPES else pytest.mark.slow) for p in RECIPES]
)
def test_recipe_trains_on_the_tiny_model(path, tiny_model_dir, workspace):
    output = run_recipe(path, example_model(tiny_model_dir), workspace)
    from ftsdk.artifacts import read_manifest

    manifest = read_manifest(output)
    recipe = Recipe.from_yaml(path)
    assert manifest["adapter"]["name"] == recipe.adapter and manifest["objective"]["name"] == recipe.objective


# -- merge configs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MERGES, ids=_ids(MERGES))
def test_merge_config_validates(path):
    from ftsdk.merging import load_merge_config

    config = load_merge_config(path)
    assert config.output is not None and config.models


def _references(raw: dict[str, Any]) -> list[str]:
    models = [entry["model"] for entry in raw.get("models", [])]
    models += [source["model"] for piece in raw.get("slices", []) for source in piece.get("sources", [])]
    return [*models, *([raw["base_model"]] if raw.get("base_model") else [])]


def _lora_adapter(base: Path, folder: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    adapter = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(folder)


@pytest.fixture(scope="module")
def merge_base(tmp_path_factory) -> Path:
    """The base the merge examples run on: 30 blocks, as SmolLM2-135M has (slerp.yaml names layers 0-30)."""
    if os.environ.get(MODEL_VARIABLE):
        from ftsdk.models.loading import resolve

        return Path(resolve(os.environ[MODEL_VARIABLE]).source)
    return build_tiny_model(tmp_path_factory.mktemp("merge-base"), TinySpec(num_layers=30))


@pytest.mark.parametrize("path", MERGES, ids=_ids(MERGES))
def test_merge_config_runs_on_tiny_models(path, merge_base, tmp_path):
    from ftsdk.merging import merge
    from ftsdk.merging.testing import variant
    from ftsdk.models.loading import ALIASES

    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    folder = tmp_path / "examples" / "merges"
    folder.mkdir(parents=True)
    for index, reference in enumerate(dict.fromkeys(r for r in _references(raw) if r not in ALIASES)):
        target = (folder / reference).resolve()
        if target.exists():
            continue
        if raw.get("method") == "peft_adapters":
            _lora_adapter(merge_base, target, seed=index)
        else:  # a fine-tune: the base with a small, distinct change
            variant(merge_base, target, lambda name, t, i=index: t + 0.01 * (i + 1) * t.sign())
    text = path.read_text(encoding="utf-8")
    for alias in ALIASES:
        text = text.replace(f": {alias}\n", f": {merge_base}\n")
    (folder / path.name).write_text(text, encoding="utf-8")
    output = merge(folder / path.name)
    assert (output / "ftsdk.json").is_file()


# -- chains ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CHAINS, ids=_ids(CHAINS))
def test_chain_validates(path):
    from ftsdk.chain.config import load_chain_config

    assert load_chain_config(path)
