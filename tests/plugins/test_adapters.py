"""Every adapter plugin on the tiny model: it trains, its output reloads, it merges exactly; its config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftsdk import ConfigError, Tuner, plugins
from ftsdk.artifacts import read_manifest

TRAINING = {"max_steps": 6, "batch_size": 8, "max_length": 64, "logging_steps": 1, "seed": 3,
            "lr_scheduler": "constant", "warmup_ratio": 0.0, "threads": 1}
#: case -> (adapter, adapter_config, learning rate: each method's own range, at its upper end for 6 steps)
CASES = {
    "lora": ("lora", {"r": 8, "dropout": 0.0}, 1e-2),
    "dora": ("dora", {"r": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}, 1e-2),
    "ia3": ("ia3", {}, 5e-2),
    "prefix": ("prefix", {"num_virtual_tokens": 8}, 5e-2),
    "prompt": ("prompt", {"num_virtual_tokens": 8, "init_text": "what is the color of"}, 2e-1),
    "full": ("full", {"freeze_blocks": 1}, 2e-3),
    "loha": ("peft", {"method": "loha", "options": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}, 2e-2),
    "lokr": ("peft", {"method": "LoKr", "options": {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}},
             2e-2),
    "vera": ("peft", {"method": "vera", "options": {"r": 16, "target_modules": ["q_proj", "v_proj"]}}, 5e-2),
    "oft": ("peft", {"method": "oft", "options": {"r": 0, "oft_block_size": 16,
                                                  "target_modules": ["q_proj", "v_proj"]}}, 2e-2),
}
MERGEABLE = ["lora", "dora", "ia3", "loha", "lokr", "vera", "oft"]
IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])


@pytest.fixture(scope="module")
def fit(tiny_model_dir, chat_data, tmp_path_factory):
    """Train a case once per module; returns (tuner, FitResult)."""
    done = {}

    def run(case: str):
        if case not in done:
            adapter, config, rate = CASES[case]
            tuner = Tuner(str(tiny_model_dir), adapter=adapter, adapter_config=config,
                          training=TRAINING | {"learning_rate": rate})
            done[case] = tuner, tuner.fit(chat_data[0], output_dir=tmp_path_factory.mktemp(case) / "out")
        return done[case]

    return run


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def base_model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


@pytest.mark.parametrize("case", list(CASES))
def test_trains_and_the_output_reloads(case, fit, tiny_model_dir):
    tuner, result = fit(case)
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert len(losses) == 6 and min(losses[-2:]) < losses[0] - 0.02, losses
    manifest = read_manifest(result.output_dir)
    assert manifest["adapter"]["name"] == CASES[case][0] and manifest["kind"] == tuner.adapter.produces
    if tuner.adapter.produces == "model":
        reloaded = base_model(result.output_dir)
    else:
        from peft import PeftModel

        reloaded = PeftModel.from_pretrained(base_model(tiny_model_dir), result.output_dir)
    torch.testing.assert_close(logits(reloaded), logits(tuner.model), atol=1e-5, rtol=1e-5)


def test_full_keeps_the_frozen_blocks(fit, tiny_model_dir):
    _, result = fit("full")
    before, after = base_model(tiny_model_dir), base_model(result.output_dir)
    frozen = zip(before.model.layers[0].parameters(), after.model.layers[0].parameters())
    assert all(torch.equal(old, new) for old, new in frozen)
    assert not torch.equal(before.model.layers[1].mlp.up_proj.weight, after.model.layers[1].mlp.up_proj.weight)


@pytest.mark.parametrize("case", MERGEABLE)
def test_merged_model_computes_what_the_adapted_one_did(case, fit, tiny_model_dir, tmp_path):
    from peft import PeftModel

    tuner, result = fit(case)
    merged_dir = tuner.merge_adapter(tmp_path / "merged") if case == "lora" else None
    if merged_dir is None:
        from ftsdk.merging.adapter import merge_adapter

        merged_dir = merge_adapter(result.output_dir, tmp_path / "merged")
    adapted = PeftModel.from_pretrained(base_model(tiny_model_dir), result.output_dir)
    merged = base_model(merged_dir)
    torch.testing.assert_close(logits(merged), logits(adapted), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(merged), logits(base_model(tiny_model_dir)), atol=1e-4)
    lineage = read_manifest(merged_dir)
    assert lineage["kind"] == "model" and lineage["merged_adapter"]["trained_with"]["adapter"]["name"] == CASES[case][0]
    assert (merged_dir / "tokenizer.json").is_file() and not (merged_dir / "adapter_config.json").exists()



@pytest.mark.parametrize(
    ("adapter", "config"),
    [("prefix", {}), ("peft", {"method": "prefix_tuning", "options": {"num_virtual_tokens": 4}})],
)
def test_prefix_tuning_refuses_gradient_checkpointing_before_loading(adapter, config, chat_data, tmp_path,
                                                                     no_model_loading):
    tuner = Tuner("some/model", adapter=adapter, adapter_config=config, training={"gradient_checkpointing": True})
    with pytest.raises(ConfigError, match="gradient_checkpointing") as caught:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert "set training.gradient_checkpointing: false" in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("adapter", "config", "message"),
    [
        ("dora", {"r": 0}, "adapter_config.r: Input should be greater than or equal to 1"),
        ("qlora", {"bits": 3}, "adapter_config.bits: Input should be 4 or 8"),
        ("qlora", {"bits": 8, "quant_type": "fp4"}, "quant_type applies to 4-bit loading only"),
        ("ia3", {"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]},
         "feedforward_modules must be among target_modules; not there: down_proj"),
        ("ia3", {"target_modules": []}, "adapter_config.target_modules"),
        ("prefix", {"encoder_hidden_size": 64}, "set prefix_projection: true"),
        ("prefix", {"num_virtual_tokens": 0}, "adapter_config.num_virtual_tokens"),
        ("prompt", {"init_text": ""}, "adapter_config.init_text"),
        ("full", {"freeze_blocks": -1}, "adapter_config.freeze_blocks"),
        ("full", {"freeze_layers": 1}, "adapter_config.freeze_layers: Extra inputs are not permitted"),
        ("peft", {}, "adapter_config.method: Field required"),
        ("peft", {"method": "LOHAA"}, "unknown PEFT method 'LOHAA'; did you mean 'LOHA'? Available: ADALORA"),
        ("peft", {"method": "loha", "options": {"rank": 8}},
         "adapter_config.options: Value error, LoHaConfig rejects them: "),
        ("peft", {"method": "oft", "options": {"r": 4, "oft_block_size": 8}}, "adapter_config.options"),
        ("peft", {"method": "adalora"}, "update_and_allocate"),
    ],
)
def test_invalid_adapter_options_name_the_field(adapter, config, message):
    with pytest.raises(ConfigError) as caught:
        Tuner("some/model", adapter=adapter, adapter_config=config)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("adapter", "config", "message"),
    [
        ("dora", {"target_modules": ["v_prj"]}, "adapter_config.target_modules: 1 name(s) match no layer"),
        ("ia3", {"target_modules": ["k_projj", "down_proj"]}, "'k_projj' -> did you mean 'k_proj'?"),
        ("peft", {"method": "lokr", "options": {"target_modules": ["q_prj"]}},
         "adapter_config.options.target_modules: 1 name(s)"),
        ("full", {"freeze_blocks": 2},
         "adapter_config.freeze_blocks is 2 but LlamaForCausalLM has 2 transformer blocks"),
    ],
)
def test_names_and_sizes_are_checked_against_the_model(adapter, config, message, tiny_model_dir, chat_data, tmp_path):
    tuner = Tuner(str(tiny_model_dir), adapter=adapter, adapter_config=config, training={"max_steps": 1})
    with pytest.raises(ConfigError) as caught:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert message in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("adapter", "config"), [("lora", {"r": 4}), ("prompt", {"num_virtual_tokens": 4})])
def test_peft_adapters_train_a_score_head_too(adapter, config, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    wrapped = plugins.create("adapter", adapter, config).wrap(model)
    trained = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert type(wrapped).__name__ == "PeftModelForSequenceClassification"
    assert any("score" in name for name in trained)
    wrapped(input_ids=IDS).logits.sum().backward()


@pytest.mark.parametrize("name", ["qlora-sft", "peft-loha-sft"])
def test_the_adapter_recipes_validate(name):
    from ftsdk.training.recipe import Recipe

    recipe = Recipe.from_yaml(Path(__file__).resolve().parents[2] / "examples" / "recipes" / f"{name}.yaml")
    assert recipe.data.train.is_file()
    Tuner.from_recipe(recipe)
