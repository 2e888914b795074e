"""The training speed options change speed, never results: each against its plain counterpart on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ftsdk import Tuner
from ftsdk.training.trained_positions import trained_positions_only

TRAINING = {"max_steps": 4, "learning_rate": 5e-3, "batch_size": 4, "logging_steps": 1, "seed": 3, "max_length": 96,
            "threads": 1, "mixed_precision": "no"}


def fit(model_dir, data, folder, **training):
    tuner = Tuner(str(model_dir), adapter="lora", adapter_config={"r": 8, "dropout": 0.0},
                  training=TRAINING | training)
    result = tuner.fit(data, output_dir=folder)
    return [e["loss"] for e in result.log_history if "loss" in e], load_file(folder / "adapter_model.safetensors")


def test_the_head_on_trained_positions_gives_the_same_losses_and_adapter(tiny_model_dir, chat_data, tmp_path):
    compact_losses, compact = fit(tiny_model_dir, chat_data[0], tmp_path / "compact")
    full_losses, full = fit(tiny_model_dir, chat_data[0], tmp_path / "full", head_on_trained_positions=False)
    assert abs(compact_losses[0] - full_losses[0]) <= 1e-5, (compact_losses, full_losses)
    assert compact_losses == pytest.approx(full_losses, abs=1e-4)
    for name, weight in full.items():
        torch.testing.assert_close(compact[name], weight, atol=1e-5, rtol=1e-4)


def test_the_head_scores_only_trained_positions_within_the_block():
    import trl.trainer.utils as head

    original = head._use_triton
    cpu = torch.device("cpu")
    assert original(cpu) is False  # TRL's own choice on the CPU: every position
    with trained_positions_only() as active:
        assert active and head._use_triton(cpu) is True
    assert head._use_triton is original
    with trained_positions_only(enabled=False) as active:
        assert not active and head._use_triton is original


def test_length_grouped_batches_hold_rows_of_similar_length(tiny_model_dir, tmp_path, monkeypatch):
    import transformers.trainer
    from ftsdk.testing.tiny import WORDS, write_jsonl

    samplers = []

    class Spy(transformers.trainer.LengthGroupedSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            samplers.append(self)

    monkeypatch.setattr(transformers.trainer, "LengthGroupedSampler", Spy)
    rows = [{"messages": [{"role": "user", "content": "say"},
                          {"role": "assistant", "content": " ".join(WORDS[: 2 + (i * 7) % 40])}]} for i in range(32)]
    data = write_jsonl(tmp_path / "lengths.jsonl", rows)
    losses, _ = fit(tiny_model_dir, data, tmp_path / "grouped", group_by_length=True, max_steps=8)
    assert len(samplers) == 1 and len(losses) == 8
    order, lengths = list(samplers[0]), samplers[0].lengths
    assert sorted(order) == list(range(32))  # every row once per epoch
    batches = [order[i:i + 4] for i in range(0, 32, 4)]
    padding = sum(4 * max(lengths[j] for j in b) - sum(lengths[j] for j in b) for b in batches)
    shuffled = [list(range(32))[i::8] for i in range(8)]  # rows of every length in each batch
    assert padding < sum(4 * max(lengths[j] for j in b) - sum(lengths[j] for j in b) for b in shuffled) / 2
    assert json.loads((tmp_path / "grouped" / "ftsdk.json").read_text())["training"]["group_by_length"] is True


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_preference_objectives_score_trained_positions_with_the_same_losses(objective, tiny_model_dir, tiny_data,
                                                                             tmp_path):
    """DPO and ORPO take sequence log-probabilities from TRL's fused head: the completions' positions only."""
    data = tiny_data("preference", count=16)
    runs = {}
    for compact in (True, False):
        tuner = Tuner(str(tiny_model_dir), adapter="lora", objective=objective, adapter_config={"r": 8, "dropout": 0.0},
                      training=TRAINING | {"max_steps": 3, "head_on_trained_positions": compact})
        result = tuner.fit(data, output_dir=tmp_path / f"{objective}-{compact}")
        runs[compact] = [e["loss"] for e in result.log_history if "loss" in e]
    assert runs[True] == pytest.approx(runs[False], abs=1e-5)
