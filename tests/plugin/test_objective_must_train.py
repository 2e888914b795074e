"""``Tuner.fit`` refuses an objective that returns without training, naming the plugin and the fix."""

from __future__ import annotations

import sys

import pytest

from ftsdk import Objective, PluginError, TrainOutcome, Tuner, hookimpl
from ftsdk.testing import conformance
from ftsdk.testing.tiny import task_rows, write_jsonl
from ftsdk.training.trainer import check_trained

TRAINING = {"epochs": 1, "batch_size": 4, "max_length": 64, "threads": 1}


class LazyObjective(Objective):
    """Returns an empty outcome without touching the model."""

    name = "lazy-test"
    summary = "returns without training (a test double)"
    data_task = "sft"

    def train(self, job):
        return TrainOutcome(metrics={}, log_history=[])


@hookimpl
def register_objectives(register):
    register(LazyObjective)


def test_fit_refuses_an_objective_that_does_not_train(tiny_model_dir, tmp_path):
    with conformance.registered(sys.modules[__name__]):
        tuner = Tuner(str(tiny_model_dir), objective="lazy-test", adapter_config={"r": 4}, training=TRAINING)
        with pytest.raises(PluginError, match="objective 'lazy-test' reported no training step") as caught:
            tuner.fit(write_jsonl(tmp_path / "d.jsonl", task_rows(8)), output_dir=tmp_path / "out")
    assert "run_trainer" in caught.value.hint
    assert not (tmp_path / "out").exists()


def test_a_logged_step_is_training():
    outcome = TrainOutcome({"train_loss": 1.0}, [{"loss": 1.0, "step": 1}, {"train_loss": 1.0, "step": 1}])
    assert check_trained(outcome, "sft") is outcome


@pytest.mark.parametrize("history", [[], [{"train_runtime": 0.0, "step": 0}], [{"loss": 1.0}]])
def test_no_step_above_zero_is_refused(history):
    with pytest.raises(PluginError, match="objective 'x' reported no training step"):
        check_trained(TrainOutcome({}, history), "x")


def test_a_wrong_return_type_is_refused():
    with pytest.raises(PluginError, match="objective 'x' returned dict from train"):
        check_trained({"loss": 1.0}, "x")
