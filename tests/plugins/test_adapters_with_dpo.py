"""Every adapter composes with DPO (SFT is covered per adapter in test_adapters): train, save, reload."""

from __future__ import annotations

import math

import pytest

from ftsdk import Tuner
from ftsdk.testing.tiny import preference_rows, write_jsonl
from tests.plugins.test_adapters import CASES

ADAPTERS = ["lora", "qlora", "dora", "ia3", "prefix", "prompt", "full", "loha"]


@pytest.fixture(scope="module")
def preferences(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("pref") / "pairs.jsonl", preference_rows(16, seed=3))


@pytest.mark.parametrize("case", ADAPTERS)
def test_adapter_trains_with_dpo(case, tiny_model_dir, preferences, tmp_path):
    adapter, config, rate = CASES[case] if case != "qlora" else ("qlora", {"r": 8, "dropout": 0.0}, 1e-2)
    tuner = Tuner(str(tiny_model_dir), adapter=adapter, adapter_config=config, objective="dpo",
                  training={"max_steps": 3, "batch_size": 4, "learning_rate": rate, "logging_steps": 1,
                            "max_length": 96})
    result = tuner.fit(preferences, output_dir=tmp_path / "out")
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert result.manifest["objective"]["name"] == "dpo"
    reopened = Tuner.load(result.output_dir)
    assert isinstance(reopened.generate("what is the color of the sky", max_new_tokens=2), str)
