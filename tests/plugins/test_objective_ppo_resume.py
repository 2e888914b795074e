"""PPO's own loop honours training.save_steps: sealed checkpoints, and a resumed run ends as an uninterrupted one."""

from __future__ import annotations

import dataclasses

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from ftsdk.training.checkpoints import checkpoints_dir, complete_checkpoints
from tests.plugins.test_objective_ppo import run_ppo

SAVING = {"max_steps": 4, "save_steps": 2, "save_total_limit": 3}


class Crash(TrainerCallback):
    """Stop the run like a crash right after step 3 (checkpoint-2 is sealed, step 3 is not saved)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise RuntimeError("crash after step 3")


def crashing(tuner):
    train = tuner.objective.train
    tuner.objective.train = lambda job: train(dataclasses.replace(job, callbacks=[*job.callbacks, Crash()]))
    return tuner


def test_a_resumed_ppo_run_ends_as_an_uninterrupted_one(tiny_model_dir, tmp_path, monkeypatch):
    import ftsdk.training.tuner

    _, reference = run_ppo(tiny_model_dir, tmp_path / "reference", SAVING)
    assert not checkpoints_dir(reference.output_dir).exists()  # removed once the output is written

    crashed = tmp_path / "crashed"
    original = ftsdk.training.tuner.Tuner._train
    monkeypatch.setattr(ftsdk.training.tuner.Tuner, "_train", lambda self, *a: original(crashing(self), *a))
    with pytest.raises(RuntimeError, match="crash after step 3"):
        run_ppo(tiny_model_dir, crashed, SAVING)
    monkeypatch.undo()
    assert [c.step for c in complete_checkpoints(checkpoints_dir(crashed))] == [2]
    assert not crashed.exists()

    _, resumed = run_ppo(tiny_model_dir, crashed, SAVING, resume=True)
    steps = [entry["step"] for entry in resumed.log_history if "policy_loss" in entry]
    assert steps == [1, 2, 3, 4]  # the first two from the checkpoint's history, 3 and 4 trained again
    assert [e["reward"] for e in resumed.log_history if "reward" in e] == \
        [e["reward"] for e in reference.log_history if "reward" in e]
    expected = load_file(reference.output_dir / "adapter_model.safetensors")
    got = load_file(resumed.output_dir / "adapter_model.safetensors")
    assert expected.keys() == got.keys() and all((expected[k] == got[k]).all() for k in expected)  # bitwise
    assert not checkpoints_dir(crashed).exists()
