"""LoRA variants change what they should: LoRA+ scales B's learning rate, PiSSA/OLoRA/gaussian initialise A and B
differently (and PiSSA/OLoRA outputs still reload on the original base), rank/alpha patterns and layers to
transform shape the adapter."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Trainer

from ftsdk import ConfigError, Tuner

TRAINING = {"learning_rate": 1e-2, "batch_size": 8, "logging_steps": 1, "seed": 7, "max_length": 64, "threads": 1,
            "max_steps": 2}
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def fit(model_dir, data, out, **adapter):
    tuner = Tuner(str(model_dir), adapter_config={"r": 4, "dropout": 0.0} | adapter, training=TRAINING)
    return tuner, tuner.fit(data[0], output_dir=out)


def test_loraplus_gives_b_its_own_learning_rate(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    made = []
    real = Trainer.create_optimizer
    monkeypatch.setattr(Trainer, "create_optimizer", lambda self, *a, **k: made.append(real(self, *a, **k)) or made[-1])
    tuner, _ = fit(tiny_model_dir, chat_data, tmp_path / "plus", loraplus_lr_ratio=16)
    names = {id(p): n for n, p in tuner.model.named_parameters()}
    peak = {}  # the scheduled learning rate of each group at its peak share: initial_lr
    for group in made[0].param_groups:
        kinds = {("B" if "lora_B" in names[id(p)] else "A") for p in group["params"]}
        if group["params"]:
            assert len(kinds) == 1
            peak.setdefault(kinds.pop(), set()).add(group["initial_lr"])
    assert peak == {"A": {1e-2}, "B": {0.16}}


def initial_weights(model_dir, **adapter) -> dict[str, torch.Tensor]:
    tuner = Tuner(str(model_dir), adapter_config={"r": 4} | adapter)
    base, _ = tuner._load_base()
    model = tuner.adapter.wrap(base)
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n or "q_proj.base_layer" in n}


def test_initialisations_differ_as_documented(tiny_model_dir):
    default = initial_weights(tiny_model_dir)
    gaussian = initial_weights(tiny_model_dir, init="gaussian")
    pissa = initial_weights(tiny_model_dir, init="pissa")
    olora = initial_weights(tiny_model_dir, init="olora")
    b = next(n for n in default if "q_proj.lora_B" in n)
    base = next(n for n in default if "q_proj.base_layer.weight" in n)
    assert default[b].abs().sum() == 0 and gaussian[b].abs().sum() == 0  # both start with B = 0
    assert pissa[b].abs().sum() > 0 and olora[b].abs().sum() > 0  # from the weight itself
    assert not torch.equal(pissa[base], default[base])  # the principal part moved out of the base


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_converted_adapters_reload_on_the_original_base(init, tiny_model_dir, chat_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tuner, result = fit(tiny_model_dir, chat_data, tmp_path / init, init=init,
                        **({"pissa_niter": 4} if init == "pissa" else {}))
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # converted: rank 2r, a plain LoRA
    tuner.model.eval()
    with torch.no_grad():
        trained = tuner.model(input_ids=IDS).logits
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                             result.output_dir)(input_ids=IDS).logits
    torch.testing.assert_close(reloaded, trained, atol=1e-4, rtol=1e-4)


def test_rank_alpha_patterns_and_layers(tiny_model_dir, chat_data, tmp_path):
    tuner, result = fit(tiny_model_dir, chat_data, tmp_path / "patterns", rank_pattern={"mlp\\..*": 8},
                        alpha_pattern={"q_proj": 2.0}, layers_to_transform=[1], target_modules=LINEAR)
    shapes = {n: p.shape for n, p in tuner.model.named_parameters() if "lora_A" in n}
    assert all(".layers.1." in n for n in shapes), "only block 1 is adapted"
    assert all(s[0] == (8 if ".mlp." in n else 4) for n, s in shapes.items())
    layer = tuner.model.base_model.model.model.layers[1]
    assert layer.self_attn.q_proj.scaling["default"] == 2.0 / 4 and layer.self_attn.k_proj.scaling["default"] == 2.0
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["rank_pattern"] == {"mlp\\..*": 8} and config["layers_to_transform"] == [1]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"pissa_niter": 4}, "pissa_niter needs init: pissa"),
        ({"init": "corda"}, "adapter_config.init: Input should be 'default', 'gaussian', 'pissa', 'olora', 'loftq' "
         "or 'eva'"),
        ({"rank_pattern": {"mlp": 0}}, "rank_pattern ranks must be at least 1"),
        ({"loraplus_lr_ratio": 0.5}, "adapter_config.loraplus_lr_ratio: Input should be greater than 1"),
        ({"layers_to_transform": []}, "layers_to_transform must list block indices"),
        ({"layers_to_transform": [1]}, "layers_to_transform needs target_modules as layer names"),
    ],
)
def test_bad_variant_options_are_config_errors(config, message):
    with pytest.raises(ConfigError) as caught:
        Tuner("smollm2-135m", adapter="lora", adapter_config=config)
    assert message in str(caught.value)
