"""PPO end to end on the tiny model: the mean reward rises, runs are reproducible, the log feeds ftsdk's
plot and bar, the adapter reloads, and reward models and full fine-tuning work too."""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

import pytest
import torch

from ftsdk import ConfigError, FitResult, Tuner
from ftsdk.testing.tiny import preference_rows, prompt_rows, write_jsonl

REWARDS = Path(__file__).parents[2] / "examples" / "rewards.py"
TRAINING = {"max_steps": 20, "learning_rate": 1e-2, "batch_size": 8, "logging_steps": 1, "seed": 7,
            "max_length": 64, "lr_scheduler": "constant", "warmup_ratio": 0.0, "threads": 1}
PPO = {"reward_functions": [f"{REWARDS}:letter_e"], "max_new_tokens": 8, "temperature": 1.0,
       "num_mini_batches": 2, "kl_coef": 0.01}
# The tiny model's tied embeddings (std 0.02) sit behind a final RMSNorm, which bounds every logit to about
# +-1.3: no change of the hidden states can make any token much likelier. LoRA on lm_head lifts the bound.
ADAPTER = {"r": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "lm_head"]}


def run_ppo(model_dir: Path, out: Path, training: dict | None = None, **options: Any) -> tuple[Tuner, FitResult]:
    config = options.pop("config", PPO)
    tuner = Tuner(str(model_dir), objective="ppo", adapter=options.pop("adapter", "lora"),
                  adapter_config=options.pop("adapter_config", ADAPTER), objective_config=config,
                  training=TRAINING | (training or {}))
    data = write_jsonl(out.parent / f"{out.name}.jsonl", prompt_rows(32, seed=1))
    return tuner, tuner.fit(data, output_dir=out, **options)


def rewards(result: FitResult) -> list[float]:
    return [entry["reward"] for entry in result.log_history if "reward" in entry]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    return run_ppo(tiny_model_dir, tmp_path_factory.mktemp("ppo") / "policy")


def test_mean_reward_rises(trained):
    _, result = trained
    curve = rewards(result)
    print("PPO mean reward per step:", [round(r, 3) for r in curve])
    assert len(curve) == 20
    assert mean(curve[-5:]) > mean(curve[:5]) + 0.1
    kl = [entry["kl"] for entry in result.log_history if "kl" in entry]
    assert kl[0] == 0.0 and kl[-1] > 0  # the policy starts as the reference and moves away from it


def test_log_history_feeds_the_plot_and_metrics(trained):
    _, result = trained
    steps = [entry for entry in result.log_history if "policy_loss" in entry]
    assert [entry["step"] for entry in steps] == list(range(1, 21))
    assert {"loss", "value_loss", "kl", "reward", "entropy", "clip_fraction", "learning_rate"} <= set(steps[0])
    assert {"reward", "kl", "train_loss", "policy_loss", "value_loss"} <= set(result.metrics)
    assert (result.output_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert result.manifest["objective"]["config"]["reward_functions"] == [f"{REWARDS}:letter_e"]


def test_runs_are_reproducible(trained, tiny_model_dir, tmp_path):
    _, result = trained
    _, again = run_ppo(tiny_model_dir, tmp_path / "again", {"max_steps": 3})
    assert rewards(again) == rewards(result)[:3]


def test_policy_adapter_reloads_in_peft(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tuner, result = trained
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    tuner.model.eval()
    with torch.no_grad():
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.output_dir)
        torch.testing.assert_close(reloaded(input_ids=ids).logits, tuner.model(input_ids=ids).logits)
    assert sorted(p.name for p in result.output_dir.glob("adapter_*")) == ["adapter_config.json",
                                                                          "adapter_model.safetensors"]


def test_full_fine_tuning_with_a_reward_model_and_evaluation(tiny_model_dir, tmp_path):
    """The reward comes from a reward model trained by objective `reward`; the reference is a frozen copy."""
    from transformers import AutoModelForCausalLM

    training = {"max_steps": 2, "learning_rate": 1e-3, "batch_size": 4}
    reward_tuner = Tuner(str(tiny_model_dir), objective="reward", adapter_config={"r": 8}, training=training)
    judge = reward_tuner.fit(write_jsonl(tmp_path / "pairs.jsonl", preference_rows(8)), output_dir=tmp_path / "judge")
    config = {"reward_model": str(judge.output_dir), "max_new_tokens": 4, "ppo_epochs": 1}
    evaluation = write_jsonl(tmp_path / "eval.jsonl", prompt_rows(4, seed=9))
    _, result = run_ppo(tiny_model_dir, tmp_path / "full", training, config=config, adapter="full",
                        adapter_config={}, eval_data=evaluation)
    assert len(rewards(result)) == 2 and "eval_reward" in result.metrics
    assert AutoModelForCausalLM.from_pretrained(result.output_dir).config.vocab_size > 0


@pytest.mark.parametrize(
    ("config", "training", "message"),
    [
        ({"max_new_tokens": 64}, {}, "max_new_tokens=64 leaves no room for the prompt"),
        ({"reward_functions": [f"{REWARDS}:missing"]}, {}, "has no attribute 'missing'"),
    ],
)
def test_impossible_ppo_runs_fail_before_loading(tiny_model_dir, tmp_path, monkeypatch, config, training, message):
    monkeypatch.setattr("ftsdk.models.loading.resolve", lambda *a, **k: pytest.fail("a model was loaded before the error"))
    with pytest.raises(ConfigError, match=message):
        run_ppo(tiny_model_dir, tmp_path / "out", training, config=PPO | config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ppo_epochs": 0}, "objective_config.ppo_epochs: Input should be greater than or equal to 1"),
        ({"clip_range": 1.5}, "objective_config.clip_range: Input should be less than 1"),
        ({"gamma": 1.1}, "objective_config.gamma: Input should be less than or equal to 1"),
        ({"temperature": 0}, "objective_config.temperature: Input should be greater than 0"),
        ({"value_coeff": 0.1}, "objective_config.value_coeff: Extra inputs are not permitted"),
    ],
)
def test_invalid_ppo_options_name_the_field(config, message):
    with pytest.raises(ConfigError) as caught:
        Tuner("smollm2-135m", objective="ppo", objective_config=PPO | config)
    assert message in str(caught.value)


def test_a_reward_function_of_the_wrong_length_is_reported(tiny_model_dir, tmp_path):
    def broken(prompts, completions, **kwargs):
        return [1.0]

    with pytest.raises(ValueError, match="reward broken returned 1 values"):
        run_ppo(tiny_model_dir, tmp_path / "out", {"max_steps": 1}, config=PPO | {"reward_functions": [broken]})
