"""Tuner as a facade: the recipe passed whole, the manifest's settings kept, and what a FitResult can do next."""

from __future__ import annotations

import pytest

from ftsdk import Tuner
from ftsdk.artifacts import read_manifest
from ftsdk.training.recipe import Recipe

TRAINING = {"epochs": 1, "learning_rate": 5e-3, "batch_size": 8, "logging_steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, chat_data, tmp_path_factory):
    tuner = Tuner(str(tiny_model_dir), adapter_config={"r": 4}, training=TRAINING)
    mp = pytest.MonkeyPatch()
    # the run report must describe the data trained on, never the file read again after training
    mp.setattr("ftsdk.data.curate.check", lambda *a, **k: pytest.fail("the training data was read again"))
    try:
        result = tuner.fit(chat_data[0], eval_data=chat_data[1], output_dir=tmp_path_factory.mktemp("fit") / "run")
    finally:
        mp.undo()
    return tuner, result


def test_the_report_uses_the_data_checks_of_the_fit(fitted, chat_data):
    _, result = fitted
    assert result.data_checks["train"]["rows"] == 64 and result.data_checks["eval"]["rows"] == 16
    assert result.data_checks["train"]["sha256"] == result.manifest["data"]["train"]["sha256"]
    assert result.data_checks["train"]["stats"]["tokens"]  # token counts: the fit's tokenizer
    report = (result.output_dir / "report.md").read_text()
    assert f"{chat_data[0]}: 64 rows" in report and "exact-duplicate groups" in report


def test_generate_uses_the_tuned_model_and_reload_reopens_the_folder(fitted):
    tuner, result = fitted
    prompt = "what is the color of the sky"
    reply = result.generate(prompt, max_new_tokens=4)
    assert reply == tuner.generate(prompt, max_new_tokens=4)
    reloaded = result.reload()
    assert reloaded is not tuner and reloaded.output_dir == result.output_dir
    assert reloaded.generate(prompt, max_new_tokens=4) == reply


def test_a_result_whose_tuner_trained_again_reloads_its_own_folder(fitted):
    tuner, result = fitted
    other = type(result)(result.output_dir, result.metrics, result.manifest, result.log_history, tuner=tuner)
    tuner_dir = tuner.output_dir
    try:
        tuner.output_dir = tuner_dir.parent / "a-later-fit"
        assert other._tuned() is not tuner and other._tuned().output_dir == result.output_dir
    finally:
        tuner.output_dir = tuner_dir


def test_merge_writes_a_plain_model_with_the_lineage(fitted, tmp_path):
    from transformers import AutoModelForCausalLM

    _, result = fitted
    merged = result.merge(tmp_path / "merged")
    manifest = read_manifest(merged)
    assert manifest["kind"] == "model" and manifest["merged_adapter"]["trained_with"]["metrics"] == result.metrics
    AutoModelForCausalLM.from_pretrained(merged)


def test_evaluate_compares_base_and_tuned(fitted, chat_data, tmp_path):
    _, result = fitted
    comparison = result.evaluate(chat_data[1], forgetting=False, limit=4, generation={"max_new_tokens": 4},
                                 output_dir=tmp_path / "eval")
    assert [c.name for c in comparison.candidates] == ["base", "tuned"]
    assert (tmp_path / "eval" / "report.html").is_file()


def test_from_recipe_takes_the_validated_recipe_whole(tiny_model_dir, monkeypatch):
    recipe = Recipe.model_validate({"model": {"name": str(tiny_model_dir)}, "adapter_config": {"r": 4},
                                    "training": {"epochs": 2}, "distributed": {"strategy": "fsdp2"}})
    monkeypatch.setattr(Tuner, "__init__", lambda *a, **k: pytest.fail("the recipe was split and validated again"))
    tuner = Tuner.from_recipe(recipe)
    assert tuner.model_spec is recipe.model and tuner.training is recipe.training
    assert tuner.distributed is recipe.distributed and tuner.adapter.config.r == 4


def test_from_manifest_keeps_distributed(fitted):
    _, result = fitted
    manifest = {**result.manifest, "distributed": {"world_size": 2, "strategy": "fsdp2", "nproc": 2}}
    again = Tuner.from_manifest(manifest)
    assert again.distributed is not None and again.distributed.strategy == "fsdp2" and again.distributed.nproc == 2
    assert Tuner.from_manifest(result.manifest).distributed is None
