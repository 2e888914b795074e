"""Keep-best and early stopping: the restored output is the best evaluated step's model, patience stops the run,
task metrics (label accuracy, JSON field match) are generated on the eval split, and resume keeps the best."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import TrainerCallback

import ftsdk.training.early_stopping as early_stopping
from ftsdk import ConfigError, Tuner
from ftsdk.evaluation.prompts import split_reference
from ftsdk.testing.tiny import COLORS, preference_rows, task_rows, write_jsonl
from ftsdk.training.checkpoints import checkpoints_dir, complete_checkpoints, rotate, seal

TRAINING = {"learning_rate": 1e-2, "batch_size": 8, "logging_steps": 1, "eval_steps": 1, "seed": 7, "max_length": 64,
            "threads": 1}
ADAPTER = {"r": 4, "dropout": 0.0}


class Snapshots(TrainerCallback):
    """The LoRA weights at each evaluation, by step (to compare the restored output with)."""

    def __init__(self) -> None:
        self.by_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.by_step[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.fixture
def snapshots(monkeypatch) -> Snapshots:
    recorder = Snapshots()
    real = early_stopping.best_callbacks
    monkeypatch.setattr(early_stopping, "best_callbacks", lambda *a: [*real(*a), recorder])
    return recorder


def lora_weights(tuner: Tuner) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in tuner.model.named_parameters() if "lora_" in n}


def logged(history: list[dict], key: str) -> dict[int, float]:
    return {entry["step"]: entry[key] for entry in history if key in entry}


def test_keep_best_restores_the_best_evaluated_step(tiny_model_dir, chat_data, tmp_path, snapshots):
    # greater_is_better on a falling loss makes the first evaluation the best: restoring it is visible
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER,
                  training=TRAINING | {"max_steps": 4, "keep_best": True, "greater_is_better": True})
    result = tuner.fit(chat_data[0], eval_data=chat_data[1], output_dir=tmp_path / "best")
    losses = logged(result.log_history, "eval_loss")
    assert list(losses) == [1, 2, 3, 4] and losses[4] < losses[1]
    best = result.manifest["best"]
    assert best == {"metric": "eval_loss", "greater_is_better": True, "value": losses[1], "step": 1,
                    "restored": True, "early_stopped": False, "last_step": 4}
    assert json.loads((result.output_dir / "ftsdk.json").read_text())["best"] == best
    restored, at_best, at_last = lora_weights(tuner), snapshots.by_step[1], snapshots.by_step[4]
    assert all(torch.equal(restored[n], at_best[n]) for n in at_best)
    assert any(not torch.equal(restored[n], at_last[n]) for n in at_last)
    reloaded = Tuner.load(result.output_dir)
    assert all(torch.equal(p.detach(), at_best[n]) for n, p in reloaded.model.named_parameters() if "lora_" in n)


def test_without_keep_best_the_last_step_is_the_output(tiny_model_dir, chat_data, tmp_path, snapshots):
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER, training=TRAINING | {"max_steps": 2})
    result = tuner.fit(chat_data[0], eval_data=chat_data[1], output_dir=tmp_path / "last")
    assert result.manifest["best"] is None
    assert all(torch.equal(lora_weights(tuner)[n], w) for n, w in snapshots.by_step[2].items())


def test_patience_stops_the_run(tiny_model_dir, chat_data, tmp_path):
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER,
                  training=TRAINING | {"max_steps": 20, "greater_is_better": True, "early_stopping_patience": 2})
    result = tuner.fit(chat_data[0], eval_data=chat_data[1], output_dir=tmp_path / "stopped")
    best = result.manifest["best"]
    assert best["early_stopped"] and best["last_step"] == 3 and best["step"] == 1 and not best["restored"]
    assert list(logged(result.log_history, "eval_loss")) == [1, 2, 3]


def test_a_threshold_counts_small_improvements_as_none(tiny_model_dir, chat_data, tmp_path):
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER,
                  training=TRAINING | {"max_steps": 20, "early_stopping_patience": 1, "early_stopping_threshold": 10.0})
    result = tuner.fit(chat_data[0], eval_data=chat_data[1], output_dir=tmp_path / "threshold")
    assert result.manifest["best"]["early_stopped"] and result.manifest["best"]["last_step"] == 2


def test_label_accuracy_is_generated_on_the_eval_split(tiny_model_dir, chat_data, tmp_path):
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER,
                  training=TRAINING | {"max_steps": 6, "eval_steps": 3, "eval_metric": "accuracy", "keep_best": True})
    result = tuner.fit(chat_data[0], eval_data=chat_data[1], output_dir=tmp_path / "accuracy")
    accuracy = logged(result.log_history, "eval_accuracy")
    assert list(accuracy) == [3, 6] and all(0 <= a <= 1 for a in accuracy.values())
    best = result.manifest["best"]
    assert best["metric"] == "eval_accuracy" and best["greater_is_better"] and best["value"] == max(accuracy.values())
    # the restored output answers the eval prompts with exactly the best accuracy
    from ftsdk.data.loading import load_dataset
    from ftsdk.evaluation.metrics import label_metrics

    prompts, references = zip(*(split_reference(c) for c in load_dataset(chat_data[1]).examples))
    replies = tuner.generate(list(prompts), max_new_tokens=8)
    assert label_metrics(replies, list(references), COLORS).accuracy == best["value"]


def json_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for row in task_rows(count, seed=seed, system=False):
        thing = row["messages"][0]["content"].rsplit(" ", 1)[-1]
        reply = json.dumps({"thing": thing, "color": row["messages"][1]["content"], "n": rng.randint(1, 3)})
        rows.append({"messages": [row["messages"][0], {"role": "assistant", "content": reply}]})
    return rows


def test_json_field_match_drives_early_stopping(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", json_rows(32, 1))
    val = write_jsonl(tmp_path / "val.jsonl", json_rows(8, 2))
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER,
                  training=TRAINING | {"max_steps": 3, "eval_metric": "field_match", "early_stopping_patience": 5,
                                       "eval_generation_limit": 4, "max_length": 96})
    result = tuner.fit(train, eval_data=val, output_dir=tmp_path / "json")
    matches = logged(result.log_history, "eval_field_match")
    assert list(matches) == [1, 2, 3] and all(0 <= m <= 1 for m in matches.values())
    assert result.manifest["best"]["metric"] == "eval_field_match"


def test_resume_keeps_the_best_and_the_best_checkpoint_survives_rotation(tiny_model_dir, chat_data, tmp_path,
                                                                          monkeypatch):
    training = TRAINING | {"max_steps": 4, "save_steps": 1, "save_total_limit": 1, "keep_best": True,
                           "greater_is_better": True}
    out = tmp_path / "resumed"

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed")

    real = early_stopping.best_callbacks
    monkeypatch.setattr(early_stopping, "best_callbacks", lambda *a: [*real(*a), Crash()])
    with pytest.raises(KeyboardInterrupt):
        Tuner(str(tiny_model_dir), adapter_config=ADAPTER, training=training).fit(
            chat_data[0], eval_data=chat_data[1], output_dir=out)
    kept = [c.step for c in complete_checkpoints(checkpoints_dir(out))]
    assert kept == [1, 3], "the best (step 1) is kept beside the newest despite save_total_limit=1"
    monkeypatch.setattr(early_stopping, "best_callbacks", real)
    result = Tuner(str(tiny_model_dir), adapter_config=ADAPTER, training=training).fit(
        chat_data[0], eval_data=chat_data[1], output_dir=out, resume=True)
    losses = logged(result.log_history, "eval_loss")
    assert list(losses) == [1, 2, 3, 4]
    assert result.manifest["best"] | {"value": None} == {"metric": "eval_loss", "greater_is_better": True,
                                                        "value": None, "step": 1, "restored": True,
                                                        "early_stopped": False, "last_step": 4}
    assert result.manifest["best"]["value"] == pytest.approx(losses[1])


def test_rotation_never_deletes_the_protected_checkpoint(tmp_path):
    for step in (1, 2, 3, 4):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "w.bin").write_bytes(b"x")
        seal(folder, step, {})
    rotate(tmp_path, 1, protect=tmp_path / "checkpoint-2")
    assert [c.step for c in complete_checkpoints(tmp_path)] == [2, 4]


@pytest.mark.parametrize(
    ("training", "data", "eval_rows", "message"),
    [
        ({"keep_best": True}, "chat", None, "training.keep_best needs eval data to measure eval_loss on"),
        ({"early_stopping_patience": 2}, "chat", None, "training.early_stopping_patience needs eval data"),
        ({"eval_metric": "field_match"}, "chat", "chat",
         "training.eval_metric field_match needs JSON replies in the eval data, but one reply is 'red'"),
        ({"eval_metric": "accuracy"}, "json", "json", "accuracy needs label replies (at most 4 words) in the eval "
                                                      "data, but one reply is '{"),
        ({"eval_metric": "accuracy"}, "dpo", "dpo", "accuracy is computed on sft data (conversations), not on "
                                                    "preference data"),
    ],
)
def test_impossible_eval_metrics_fail_before_loading(training, data, eval_rows, message, tiny_model_dir, tmp_path,
                                                     no_model_loading):
    rows = {"chat": lambda s: task_rows(16, seed=s), "json": lambda s: json_rows(16, s),
            "dpo": lambda s: preference_rows(16, seed=s)}
    train = write_jsonl(tmp_path / "t.jsonl", rows[data](1))
    val = write_jsonl(tmp_path / "v.jsonl", rows[eval_rows](2)) if eval_rows else None
    tuner = Tuner(str(tiny_model_dir), objective="dpo" if data == "dpo" else "sft", training=training)
    with pytest.raises(ConfigError) as caught:
        tuner.fit(train, eval_data=val, output_dir=tmp_path / "out")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"keep_best": True, "save_steps": 4, "eval_steps": 2}, "keep_best with save_steps needs eval_steps equal"),
        ({"early_stopping_threshold": 0.1}, "early_stopping_threshold needs early_stopping_patience"),
        ({"early_stopping_patience": 0}, "training.early_stopping_patience: Input should be greater than or equal"),
    ],
)
def test_inconsistent_settings_are_config_errors(training, message):
    with pytest.raises(ConfigError) as caught:
        Tuner("smollm2-135m", training=training)
    assert message in str(caught.value)
