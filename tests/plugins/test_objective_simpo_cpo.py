"""SimPO and CPO (reference-free preference objectives, TRL's CPOTrainer) on the tiny model: they learn to prefer
the chosen answer, reload in peft, keep no reference adapter, and refuse bad options before loading."""

from __future__ import annotations

from statistics import mean

import pytest

from ftsdk import ConfigError, Tuner, plugins
from ftsdk.testing.tiny import preference_rows, write_jsonl
from tests.plugins.test_objectives import ADAPTER, TRAINING, assert_reloads_as_trained, fit, logged


@pytest.mark.parametrize("name", ["simpo", "cpo"])
def test_registered_as_preference_objectives(name):
    info = plugins.get("objective", name)
    assert info.cls.data_task == "preference" and info.distribution == "ftsdk"


@pytest.mark.parametrize(("name", "config"), [("simpo", {}), ("cpo", {}), ("cpo", {"loss_type": "hinge"})])
def test_prefers_chosen_and_reloads(name, config, tiny_model_dir, tmp_path):
    tuner, result = fit(tiny_model_dir, name, preference_rows(32, seed=1), tmp_path / name, config=config,
                        training={"epochs": 3})
    margins = logged(result, "rewards/margins")
    assert mean(margins[len(margins) // 2 :]) > mean(margins[: len(margins) // 2])
    assert mean(logged(result, "rewards/accuracies")[len(margins) // 2 :]) > 0.5
    assert result.manifest["objective"]["name"] == name
    assert_reloads_as_trained(tuner, result.output_dir, tiny_model_dir)


def test_simpo_passes_its_loss_and_margin_to_trl(tiny_model_dir, tmp_path, monkeypatch):
    from ftsdk_plugins.objectives import cpo

    seen = {}
    config_class, trainer_class = cpo.cpo_classes()

    class Recording(trainer_class):
        def __init__(self, *args, **kwargs):
            seen["args"] = kwargs["args"]
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cpo, "cpo_classes", lambda: (config_class, Recording))  # SimPO is CPO's trainer
    fit(tiny_model_dir, "simpo", preference_rows(8, seed=1), tmp_path / "s",
        config={"beta": 2.5, "gamma": 1.25, "cpo_alpha": 0.1}, training={"max_steps": 1})
    args = seen["args"]
    assert (args.loss_type, args.beta, args.simpo_gamma, args.cpo_alpha) == ("simpo", 2.5, 1.25, 0.1)


@pytest.mark.parametrize(
    ("objective", "config", "message"),
    [
        ("simpo", {"beta": 0}, "objective_config.beta: Input should be greater than 0"),
        ("simpo", {"gamma": -1}, "objective_config.gamma: Input should be greater than or equal to 0"),
        ("cpo", {"loss_type": "simpo"}, "objective_config.loss_type: Input should be 'sigmoid', 'hinge' or 'ipo'"),
        ("cpo", {"cpo_alpha": -0.5}, "objective_config.cpo_alpha"),
    ],
)
def test_invalid_options_name_the_field(objective, config, message):
    with pytest.raises(ConfigError) as caught:
        Tuner("smollm2-135m", objective=objective, objective_config=config)
    assert message in str(caught.value)


@pytest.mark.parametrize("objective", ["simpo", "cpo"])
def test_an_adapter_on_lm_head_is_refused_before_loading(objective, tiny_model_dir, tmp_path, no_model_loading):
    tuner = Tuner(str(tiny_model_dir), objective=objective, training=TRAINING,
                  adapter_config=ADAPTER | {"target_modules": ["q_proj", "lm_head"]})
    with pytest.raises(ConfigError, match=f"objective '{objective}' cannot train an adapter on lm_head"):
        tuner.fit(write_jsonl(tmp_path / "d.jsonl", preference_rows(4)), output_dir=tmp_path / "out")
