"""Replay against forgetting on a tiny model: replay rows in the batches at the ratio, the KL pull toward the base."""

from __future__ import annotations

import pytest

from ftsdk.plugin.errors import ConfigError
from ftsdk.testing.tiny import task_rows, write_jsonl
from ftsdk.training.replay import REPLAY_COLUMN, ReplayOptions, kl_to_base, mix, replay_count, replay_rows

TRAINING = {"max_steps": 6, "learning_rate": 1e-2, "batch_size": 8, "logging_steps": 1, "seed": 3,
            "max_length": 64}


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("replay") / "train.jsonl", task_rows(30, seed=1))


def _trainer(model, tokenizer, dataset, kl_weight, tmp_path):
    from trl import SFTConfig

    from ftsdk_plugins.objectives._sft_replay import ReplaySFTTrainer

    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True, bf16=False,
                     report_to="none", max_length=64, seed=0)
    return ReplaySFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            kl_weight=kl_weight)


def _mixed(tokenizer, ratio, count=30):
    from datasets import Dataset

    from ftsdk.data.tokenize import tokenize_all

    task, _ = tokenize_all(tokenizer, [r["messages"] for r in task_rows(count, seed=1)], 64, True)
    general = replay_rows(ReplayOptions(ratio=ratio), tokenizer, 64, True)
    return task, general, Dataset.from_dict(mix(task, general, ratio, seed=0))


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_replay_rows_are_in_the_batches_at_the_ratio(tiny_model_dir, tiny_tokenizer, tmp_path, ratio):
    import torch
    from transformers import AutoModelForCausalLM

    task, general, dataset = _mixed(tiny_tokenizer, ratio)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    flags, replayed = [], set()
    for batch in _trainer(model, tiny_tokenizer, dataset, 0.0, tmp_path).get_train_dataloader():
        flags += batch[REPLAY_COLUMN].tolist()
        for ids, mask, is_replay in zip(batch["input_ids"], batch["attention_mask"], batch[REPLAY_COLUMN]):
            if is_replay:
                replayed.add(tuple(ids[mask.bool()].tolist()))
    assert len(flags) == len(task) + replay_count(len(task), ratio)
    assert sum(flags) / len(flags) == pytest.approx(ratio, abs=0.5 / len(flags))
    # the replay rows are the shipped passages' tokens, every one of them trained (text rows)
    assert replayed <= {tuple(r.input_ids) for r in general} and len(replayed) == sum(flags)
    assert all(r.labels == r.input_ids for r in general)


def test_mix_cycles_a_small_replay_set_in_a_seeded_order(tiny_tokenizer):
    task, general, _ = _mixed(tiny_tokenizer, 0.2)
    few = general[:3]
    columns = mix(task, few, 0.5, seed=1)
    assert sum(columns[REPLAY_COLUMN]) == len(task)  # 0.5: one replay row per task row, the three cycled
    drawn = columns["input_ids"][len(task):]
    assert {tuple(ids) for ids in drawn} == {tuple(r.input_ids) for r in few}
    assert mix(task, few, 0.5, seed=1) == columns and mix(task, few, 0.5, seed=2) != columns


def test_kl_is_zero_at_step_0_and_the_hand_formula(tiny_model_dir, tiny_tokenizer, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    _, _, dataset = _mixed(tiny_tokenizer, 0.5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainer = _trainer(model, tiny_tokenizer, dataset, 1.0, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    rows = batch.pop(REPLAY_COLUMN)
    assert rows.any()
    assert trainer.replay_kl(model, batch, rows).item() == pytest.approx(0.0, abs=1e-7)  # LoRA's B starts at zero
    # KL(p || q) = sum p (log p - log q) over the trained next-token positions, averaged over them
    logits, other = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    p, q = other.log_softmax(-1), logits.log_softmax(-1)
    by_hand = [(p[r, t].exp() * (p[r, t] - q[r, t])).sum() for r in range(2) for t in range(4) if labels[r, t + 1] >= 0]
    assert kl_to_base(logits, other, labels).item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-5)


def _fit(tiny_model_dir, train_file, tmp_path, kl_weight, adapter="lora", **data):
    from ftsdk.training.tuner import Tuner

    tuner = Tuner(str(tiny_model_dir), adapter=adapter, training=TRAINING,
                  objective_config={"replay": {"ratio": 0.5, "kl_weight": kl_weight}})
    result = tuner.fit(train_file, output_dir=tmp_path / f"{adapter}-kl{kl_weight}", **data)
    return tuner, result


def _kl_on_replay(tuner):
    """KL(base || tuned) on the shipped passages, the adapter switched off for the base."""
    import torch

    rows = replay_rows(ReplayOptions(), tuner.tokenizer, 64, True)[:16]
    model = tuner.model.eval()
    total = 0.0
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row.input_ids])
            tuned = model(input_ids=ids).logits
            with model.disable_adapter():
                base = model(input_ids=ids).logits
            total += kl_to_base(tuned, base, torch.tensor([row.labels])).item()
    return total / len(rows)


def test_kl_pulls_the_tuned_model_toward_the_base(tiny_model_dir, train_file, tmp_path):
    plain, plain_result = _fit(tiny_model_dir, train_file, tmp_path, 0.0)
    pulled, pulled_result = _fit(tiny_model_dir, train_file, tmp_path, 20.0)
    logged = [e["kl_to_base"] for e in pulled_result.log_history if "kl_to_base" in e]
    assert len(logged) == TRAINING["max_steps"] and logged[0] == pytest.approx(0.0, abs=1e-6)
    assert not any("kl_to_base" in e for e in plain_result.log_history)
    drift_plain, drift_pulled = _kl_on_replay(plain), _kl_on_replay(pulled)
    assert drift_plain > 0 and drift_pulled < 0.5 * drift_plain
    assert pulled_result.manifest["objective"]["config"]["replay"]["kl_weight"] == 20.0


def test_full_fine_tuning_pulls_toward_a_frozen_copy(tiny_model_dir, train_file, tmp_path):
    _, result = _fit(tiny_model_dir, train_file, tmp_path, 1.0, adapter="full", eval_data=train_file)
    logged = [e["kl_to_base"] for e in result.log_history if "kl_to_base" in e]
    assert logged[0] == pytest.approx(0.0, abs=1e-6) and logged[-1] > 0
    assert "eval_loss" in result.metrics  # the eval rows (no replay flag) pass the same collator


@pytest.mark.parametrize(("config", "message"), [
    ({"replay": {"ratio": 1.0}}, "replay.ratio"),
    ({"replay": {"ratio": 0}}, "replay.ratio"),
    ({"replay": {"kl_weight": -1}}, "replay.kl_weight"),
    ({"replay": {"data": "nowhere.jsonl"}}, "does not exist"),
    ({"replay": {"sample": 3}}, "replay.sample"),
    ({"replay": {}, "packing": True}, "cannot be packed"),
])
def test_bad_replay_options_fail_before_loading(config, message):
    from ftsdk.training.tuner import Tuner

    with pytest.raises(ConfigError, match=message):
        Tuner("model", objective_config=config)


def test_a_recipes_replay_file_is_relative_to_the_recipe_and_trains_on_its_replies(tiny_tokenizer, tmp_path,
                                                                                   monkeypatch):
    import yaml

    from ftsdk.data.tokenize import IGNORE_INDEX
    from ftsdk.training.tuner import Tuner

    folder = tmp_path / "recipes"
    write_jsonl(folder / "general.jsonl", [
        {"messages": [{"role": "user", "content": "name a fruit"}, {"role": "assistant", "content": "an apple"}]},
        {"messages": [{"role": "user", "content": "say hello"}, {"role": "assistant", "content": "hello there"}]},
    ])
    (folder / "recipe.yaml").write_text(yaml.safe_dump({
        "model": "model", "objective_config": {"replay": {"data": "general.jsonl", "ratio": 0.25}}}))
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    options = Tuner.from_recipe(folder / "recipe.yaml").objective.config.replay
    assert options.source() == folder / "general.jsonl"
    rows = replay_rows(options, tiny_tokenizer, 64, True)
    trained = [tiny_tokenizer.decode([t for t in r.labels if t != IGNORE_INDEX]) for r in rows]
    assert trained == ["an apple<|im_end|>", "hello there<|im_end|>"]  # the replies only, as for task rows
