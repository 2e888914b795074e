"""The TRL-trained objectives (dpo, orpo, kto, reward, grpo) on the tiny model: training moves, artifacts
reload in peft/transformers, and bad configs, pairings and data fail before any model loads."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import pytest
import torch

from ftsdk import ConfigError, DataError, FitResult, Tuner, plugins
from ftsdk.testing.tiny import preference_rows, prompt_rows, task_rows, unpaired_rows, write_jsonl
from ftsdk_plugins.objectives._rewards import resolve_function

TRAINING = {"epochs": 2, "learning_rate": 1e-2, "batch_size": 8, "logging_steps": 1, "seed": 7, "max_length": 64,
            "threads": 1}  # one thread: faster than two on a shared 2-core machine
ADAPTER = {"r": 8, "dropout": 0.0}
REWARDS = Path(__file__).parents[2] / "examples" / "rewards.py"
IDS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def fit(model_dir: Path, objective: str, rows: list[dict], out: Path, *, config: dict | None = None,
        training: dict | None = None) -> tuple[Tuner, FitResult]:
    tuner = Tuner(str(model_dir), objective=objective, adapter_config=ADAPTER, objective_config=config,
                  training=TRAINING | (training or {}))
    return tuner, tuner.fit(write_jsonl(out.parent / f"{out.name}.jsonl", rows), output_dir=out)


def logged(result: FitResult, key: str) -> list[float]:
    return [entry[key] for entry in result.log_history if key in entry]


def assert_reloads_as_trained(tuner: Tuner, output_dir: Path, base_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tuner.model.eval()
    with torch.no_grad():
        trained = tuner.model(input_ids=IDS).logits
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), output_dir)(input_ids=IDS)
    torch.testing.assert_close(reloaded.logits, trained)
    assert not (output_dir / "ref").exists(), "TRL's reference adapter must not be saved"


def test_every_objective_is_a_plugin_with_its_data_task():
    tasks = {name: plugins.get("objective", name).cls for name in ("dpo", "orpo", "kto", "reward", "grpo", "ppo")}
    assert {n: c.data_task for n, c in tasks.items()} == {
        "dpo": "preference", "orpo": "preference", "kto": "unpaired_preference", "reward": "preference",
        "grpo": "prompt", "ppo": "prompt"}
    assert tasks["reward"].model_head == "sequence_classification"
    for cls in tasks.values():
        schema = cls.Config.model_json_schema()
        assert all(field.get("description") for field in schema["properties"].values()), cls.name


def test_dpo_prefers_chosen_and_reloads(tiny_model_dir, tmp_path):
    tuner, result = fit(tiny_model_dir, "dpo", preference_rows(32, seed=1), tmp_path / "dpo", training={"epochs": 3})
    late = len(logged(result, "rewards/margins")) // 2
    assert mean(logged(result, "rewards/margins")[late:]) > 0
    assert mean(logged(result, "loss")[late:]) < 0.6931
    assert result.manifest["objective"]["config"]["loss_type"] == "sigmoid"
    assert_reloads_as_trained(tuner, result.output_dir, tiny_model_dir)


def test_dpo_ipo_on_chat_pairs(tiny_model_dir, tmp_path):
    tuner, result = fit(tiny_model_dir, "dpo", preference_rows(16, seed=1, chat=True), tmp_path / "ipo",
                        config={"loss_type": "ipo", "beta": 0.5}, training={"max_steps": 2})
    assert result.manifest["data"]["train"]["format"] == "chat_preference"
    assert len(logged(result, "loss")) == 2 and result.manifest["objective"]["config"]["loss_type"] == "ipo"


def test_orpo_loss_falls_and_reloads(tiny_model_dir, tmp_path):
    tuner, result = fit(tiny_model_dir, "orpo", preference_rows(32, seed=1), tmp_path / "orpo")
    losses = logged(result, "loss")
    assert losses[-1] < losses[0] - 0.2
    assert_reloads_as_trained(tuner, result.output_dir, tiny_model_dir)


def test_kto_separates_desirable_from_undesirable(tiny_model_dir, tmp_path):
    tuner, result = fit(tiny_model_dir, "kto", unpaired_rows(32, seed=1), tmp_path / "kto")
    margins = [c - r for c, r in zip(logged(result, "rewards/chosen"), logged(result, "rewards/rejected"))]
    assert mean(margins[len(margins) // 2 :]) > 0
    assert logged(result, "loss")[-1] < logged(result, "loss")[0]
    assert_reloads_as_trained(tuner, result.output_dir, tiny_model_dir)


def easy_pairs(count: int, seed: int) -> list[dict]:
    """Pairs a tiny reward model can learn in seconds: any right color beats a refusal."""
    return [row | {"rejected": "i do not know"} for row in preference_rows(count, seed=seed)]


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward") / "model"
    return fit(tiny_model_dir, "reward", easy_pairs(64, seed=1), out)


def test_reward_model_scores_chosen_above_rejected_after_reloading(reward_model, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    tuner, result = reward_model
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model = PeftModel.from_pretrained(base, result.output_dir).eval()
    tokenizer = tuner.tokenizer

    def score(prompt: str, answer: str) -> float:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": answer}], tokenize=False)
        with torch.no_grad():
            return model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()

    held_out = easy_pairs(16, seed=5)
    assert all(score(r["prompt"], r["chosen"]) > score(r["prompt"], r["rejected"]) for r in held_out)
    assert logged(result, "accuracy")[-1] == 1.0


def test_grpo_trains_from_reward_functions_and_reloads(tiny_model_dir, tmp_path):
    config = {"reward_functions": [f"{REWARDS}:letter_e", "examples.rewards:contains_answer"],
              "reward_weights": [1.0, 0.5], "num_generations": 4, "max_completion_length": 8}
    tuner, result = fit(tiny_model_dir, "grpo", prompt_rows(16, seed=1), tmp_path / "grpo", config=config,
                        training={"max_steps": 4})
    assert len(logged(result, "rewards/letter_e/mean")) == 4 and logged(result, "rewards/contains_answer/mean")
    assert all(0 <= r <= 1.5 for r in logged(result, "reward"))
    lora_b = [p for n, p in tuner.model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "the policy did not move"
    assert_reloads_as_trained(tuner, result.output_dir, tiny_model_dir)



@pytest.mark.parametrize(
    ("objective", "config", "message"),
    [
        ("dpo", {"loss_type": "dpo"}, "objective_config.loss_type: Input should be 'sigmoid', 'ipo'"),
        ("dpo", {"beta": 0}, "objective_config.beta: Input should be greater than 0"),
        ("dpo", {"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing has no effect with loss_type"),
        ("dpo", {"loss_type": "exo_pair"}, "needs label_smoothing above 0"),
        ("orpo", {"max_completion_length": 0}, "objective_config.max_completion_length"),
        ("kto", {"loss_type": "sigmoid"}, "objective_config.loss_type: Input should be 'kto' or 'apo_zero_unpaired'"),
        ("reward", {"center_rewards_coefficient": -1}, "objective_config.center_rewards_coefficient"),
        ("grpo", {}, "give reward_functions, a reward_model, or both"),
        ("grpo", {"reward_functions": ["no_colon"]}, "'no_colon' is not 'module:function' or 'file.py:function'"),
        ("grpo", {"reward_functions": ["a:b"], "reward_weights": [1, 2]}, "reward_weights has 2 values for 1"),
        ("grpo", {"reward_functions": ["a:b"], "num_generations": 1}, "num_generations: Input should be greater"),
    ],
)
def test_invalid_objective_options_name_the_field(objective, config, message):
    with pytest.raises(ConfigError) as caught:
        Tuner("smollm2-135m", objective=objective, objective_config=config)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("objective", "rows", "options", "message"),
    [
        ("kto", unpaired_rows(4), {"training": {"batch_size": 1}}, "kto needs training.batch_size of at least 2"),
        ("dpo", preference_rows(4), {"adapter_config": {"target_modules": ["q_proj", "lm_head"]}},
         "objective 'dpo' cannot train an adapter on lm_head"),
        ("grpo", prompt_rows(4), {"objective_config": {"reward_functions": ["a:b"], "num_generations": 3}},
         "cannot hold whole groups of num_generations=3"),
        ("grpo", prompt_rows(4), {"objective_config": {"reward_functions": ["no_such_module_xyz:f"]}},
         "cannot load 'no_such_module_xyz:f': No module named 'no_such_module_xyz'"),
        ("grpo", prompt_rows(4), {"objective_config": {"reward_functions": [f"{REWARDS}:nope"]}},
         "has no attribute 'nope'"),
        ("grpo", prompt_rows(4), {"objective_config": {"reward_model": "/no/such/folder"}},
         "/no/such/folder is not a model or adapter folder"),
        ("orpo", preference_rows(4), {"adapter": "prompt", "adapter_config": {}},
         "objective 'orpo' cannot train adapter 'prompt' (PROMPT_TUNING)"),
    ],
)
def test_impossible_runs_fail_before_loading(tiny_model_dir, tmp_path, no_model_loading, objective, rows, options,
                                             message):
    tuner = Tuner(str(tiny_model_dir), objective=objective, adapter=options.get("adapter", "lora"),
                  adapter_config=options.get("adapter_config", ADAPTER),
                  objective_config=options.get("objective_config"), training=TRAINING | options.get("training", {}))
    with pytest.raises(ConfigError) as caught:
        tuner.fit(write_jsonl(tmp_path / "d.jsonl", rows), output_dir=tmp_path / "out")
    assert message in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_an_adapter_without_the_objectives_head_is_refused_before_loading(tiny_model_dir, tmp_path, no_model_loading):
    tuner = Tuner(str(tiny_model_dir), objective="reward", adapter_config=ADAPTER)
    tuner.adapter.heads = ("causal_lm",)  # as a third-party adapter that cannot wrap a score head
    with pytest.raises(ConfigError, match="adapter 'lora' cannot train a sequence_classification head, which "
                                          "objective 'reward' needs"):
        tuner.fit(write_jsonl(tmp_path / "d.jsonl", preference_rows(4)), output_dir=tmp_path / "out")


@pytest.mark.parametrize(
    ("objective", "rows", "message"),
    [
        ("dpo", task_rows(2), "cannot tell the data format from the first row (keys: messages)"),
        ("kto", preference_rows(2), "cannot tell the data format from the first row (keys: chosen, prompt, rejected)"),
        ("orpo", [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}],
         "line 2: rejected: Field required"),
        ("ppo", [{"prompt": "q"}, {"prompt": [{"role": "assistant", "content": "a"}]}],
         "line 2: prompt: Input should be a valid string"),
    ],
)
def test_data_of_the_wrong_shape_is_refused_before_loading(tiny_model_dir, tmp_path, no_model_loading, objective,
                                                           rows, message):
    config = {"reward_functions": [f"{REWARDS}:letter_e"]} if objective == "ppo" else None
    tuner = Tuner(str(tiny_model_dir), objective=objective, objective_config=config)
    with pytest.raises(DataError) as caught:
        tuner.fit(write_jsonl(tmp_path / "d.jsonl", rows), output_dir=tmp_path / "out")
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["lora-dpo", "lora-reward", "lora-grpo", "lora-ppo"])
def test_the_objective_recipes_validate(name, monkeypatch):
    from ftsdk.training.recipe import Recipe

    recipe = Recipe.from_yaml(REWARDS.parents[1] / "examples" / "recipes" / f"{name}.yaml")
    tuner = Tuner.from_recipe(recipe)
    monkeypatch.chdir(REWARDS.parents[1])  # reward function paths are relative to the working directory
    for function in getattr(tuner.objective.config, "reward_functions", []):
        assert callable(resolve_function(function))
