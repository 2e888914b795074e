"""Every optimizer takes a real step on CPU (the class transformers built is the one asked for) and the
learning-rate schedules have their shapes: restarts, polynomial decay to a floor, warm-up/stable/decay."""

from __future__ import annotations

import math

import pytest
from transformers import Trainer

from ftsdk import ConfigError, Tuner
from ftsdk.training.trainer import OPTIMIZERS

TRAINING = {"learning_rate": 1e-2, "batch_size": 8, "logging_steps": 1, "seed": 7, "max_length": 64, "threads": 1,
            "warmup_ratio": 0.0}
ADAPTER = {"r": 4, "dropout": 0.0}


@pytest.fixture
def built(monkeypatch) -> list:
    """The optimizers the Trainer builds (before accelerate wraps them)."""
    made = []
    real = Trainer.create_optimizer

    def recording(self, *args, **kwargs):
        optimizer = real(self, *args, **kwargs)
        made.append(optimizer)
        return optimizer

    monkeypatch.setattr(Trainer, "create_optimizer", recording)
    return made


#: the optimizer class each ftsdk name must build, by module and name
CLASSES = {
    "adamw": "torch.optim.adamw.AdamW", "adafactor": "transformers.optimization.Adafactor",
    "sgd": "torch.optim.sgd.SGD", "adagrad": "torch.optim.adagrad.Adagrad", "rmsprop": "torch.optim.rmsprop.RMSprop",
    "adamw_8bit": "bitsandbytes.optim.adamw.AdamW", "paged_adamw": "bitsandbytes.optim.adamw.AdamW",
    "paged_adamw_8bit": "bitsandbytes.optim.adamw.AdamW", "lion": "bitsandbytes.optim.lion.Lion",
    "lion_8bit": "bitsandbytes.optim.lion.Lion", "ademamix": "bitsandbytes.optim.ademamix.AdEMAMix",
    "ademamix_8bit": "bitsandbytes.optim.ademamix.AdEMAMix",
}


def test_every_optimizer_has_a_class_to_check():
    assert set(CLASSES) == set(OPTIMIZERS)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_each_optimizer_takes_a_step_on_cpu(optimizer, tiny_model_dir, chat_data, tmp_path, built):
    extra = {"momentum": 0.9} if optimizer in ("sgd", "rmsprop") else {}
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER,
                  training=TRAINING | {"max_steps": 2, "optimizer": optimizer} | extra)
    result = tuner.fit(chat_data[0], output_dir=tmp_path / optimizer)
    [made] = built
    assert f"{type(made).__module__}.{type(made).__name__}" == CLASSES[optimizer]
    if optimizer.endswith("8bit"):  # 8-bit states (bitsandbytes keeps tensors under 4096 values in 32 bits)
        assert made.args.optim_bits == 8
    if extra:
        assert all(group["momentum"] == 0.9 for group in made.param_groups)
    lora_b = [p for n, p in tuner.model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "the step did not move the adapter (LoRA B starts at zero)"
    assert all(math.isfinite(e["loss"]) for e in result.log_history if "loss" in e)


def rates(tiny_model_dir, chat_data, tmp_path, **training) -> list[float]:
    tuner = Tuner(str(tiny_model_dir), adapter_config=ADAPTER, training=TRAINING | {"max_steps": 8} | training)
    result = tuner.fit(chat_data[0], output_dir=tmp_path / training["lr_scheduler"])
    return [e["learning_rate"] for e in result.log_history if "learning_rate" in e]


def test_cosine_with_restarts_returns_to_the_peak(tiny_model_dir, chat_data, tmp_path):
    lr = rates(tiny_model_dir, chat_data, tmp_path, lr_scheduler="cosine_with_restarts", lr_cycles=2)
    assert lr[0] == pytest.approx(1e-2) and lr[4] == pytest.approx(1e-2)  # steps 1 and 5 start a cycle
    assert lr[3] < lr[2] < lr[1] < lr[0] and lr[7] < lr[6] < lr[5] < lr[4]


def test_polynomial_decays_to_its_floor(tiny_model_dir, chat_data, tmp_path):
    lr = rates(tiny_model_dir, chat_data, tmp_path, lr_scheduler="polynomial", lr_power=2.0, lr_min_ratio=0.1)
    floor, peak = 1e-3, 1e-2
    expected = [(peak - floor) * (1 - step / 8) ** 2 + floor for step in range(8)]
    assert lr == pytest.approx(expected)


def test_warmup_stable_decay_holds_then_decays(tiny_model_dir, chat_data, tmp_path):
    lr = rates(tiny_model_dir, chat_data, tmp_path, lr_scheduler="warmup_stable_decay", lr_decay_steps=3,
               warmup_ratio=0.25)
    # the rate each step used: two warm-up steps, stable at the peak, then three decaying (linearly) to 0
    assert lr == pytest.approx([0.0, 5e-3, 1e-2, 1e-2, 1e-2, 1e-2, 7.5e-3, 2.5e-3])


def test_cosine_with_min_lr_stops_at_the_floor(tiny_model_dir, chat_data, tmp_path):
    lr = rates(tiny_model_dir, chat_data, tmp_path, lr_scheduler="cosine_with_min_lr", lr_min_ratio=0.5)
    assert min(lr) >= 5e-3 and lr[-1] < lr[0]


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"lr_scheduler": "warmup_stable_decay"}, "lr_decay_steps is given with lr_scheduler warmup_stable_decay"),
        ({"lr_decay_steps": 3}, "lr_decay_steps is given with lr_scheduler warmup_stable_decay, and only then"),
        ({"lr_cycles": 3}, "lr_cycles has no effect with lr_scheduler cosine"),
        ({"lr_scheduler": "linear", "lr_power": 2}, "lr_power has no effect with lr_scheduler linear"),
        ({"momentum": 0.9}, "momentum has no effect with optimizer adamw"),
        ({"optimizer": "adam"}, "training.optimizer: Input should be 'adamw', 'adamw_8bit'"),
        ({"adam_betas": [0.9, 1.5]}, "adam_betas must both be in [0, 1)"),
    ],
)
def test_bad_optimizer_settings_are_config_errors(training, message):
    with pytest.raises(ConfigError) as caught:
        Tuner("smollm2-135m", training=training)
    assert message in str(caught.value)


def test_a_bitsandbytes_optimizer_without_bitsandbytes_fails_before_loading(tiny_model_dir, chat_data, tmp_path,
                                                                             monkeypatch, no_model_loading):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    tuner = Tuner(str(tiny_model_dir), training={"optimizer": "paged_adamw_8bit"})
    with pytest.raises(ConfigError) as caught:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert 'pip install "ftsdk[bnb]"' in str(caught.value)
