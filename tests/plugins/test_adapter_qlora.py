"""QLoRA for real on CPU (bitsandbytes' CPU backend): 4-bit and 8-bit loading, training, dequantized merging.

Measured on the tiny model (fp32, CPU): the merged model equals the dequantized base + adapter to ~3e-7; against
the adapted 4-bit model itself (whose CPU kernels compute in bfloat16) the largest logit gap is ~1e-2, against
the adapter merged into the original, unquantized base it is the quantization error, ~5e-2.
"""

from __future__ import annotations

import pytest
import torch

from ftsdk import ConfigError, Tuner, plugins
from ftsdk.artifacts import read_manifest
from ftsdk.models.device import Placement

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.filterwarnings("ignore:MatMul8bitLt")

TRAINING = {"max_steps": 6, "batch_size": 8, "max_length": 64, "logging_steps": 1, "seed": 3, "threads": 1,
            "learning_rate": 1e-2, "lr_scheduler": "constant", "warmup_ratio": 0.0}
IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])


@pytest.fixture(scope="module")
def nf4(tiny_model_dir, chat_data, tmp_path_factory):
    tuner = Tuner(str(tiny_model_dir), adapter="qlora", adapter_config={"r": 8, "dropout": 0.0}, training=TRAINING)
    return tuner, tuner.fit(chat_data[0], output_dir=tmp_path_factory.mktemp("qlora") / "nf4")


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def linear_types(model) -> set[str]:
    return {type(module).__name__ for name, module in model.named_modules() if name.endswith("base_layer")}


def losses_of(result) -> list[float]:
    return [entry["loss"] for entry in result.log_history if "loss" in entry]


def test_four_bit_training_moves_the_loss_and_reloads_on_a_four_bit_base(nf4, tiny_model_dir):
    from peft import PeftModel

    tuner, result = nf4
    losses = losses_of(result)
    assert min(losses[-2:]) < losses[0] - 0.02, losses
    assert linear_types(tuner.model) == {"Linear4bit"}
    config = read_manifest(result.output_dir)["adapter"]["config"]
    assert config["bits"] == 4 and config["quant_type"] == "nf4" and config["double_quant"]
    adapter = plugins.create("adapter", "qlora", config)
    spec, placement = tuner.model_spec, Placement("cpu", torch.float32)
    from ftsdk.models.loading import load_model, resolve

    base = load_model(resolve(spec), spec, placement, "causal_lm", **adapter.load_options(placement, "causal_lm"))
    reloaded = PeftModel.from_pretrained(base, result.output_dir)
    # TRL's SFTTrainer turns a quantized model's adapter weights into bfloat16 (the QLoRA paper's choice);
    # reloaded onto float32 LoRA layers they hold the same values but compute in float32
    torch.testing.assert_close(logits(reloaded), logits(tuner.model), atol=1e-2, rtol=0)


def test_eight_bit_training(tiny_model_dir, chat_data, tmp_path):
    tuner = Tuner(str(tiny_model_dir), adapter="qlora", adapter_config={"bits": 8, "r": 8, "dropout": 0.0},
                  training=TRAINING | {"max_steps": 4})
    result = tuner.fit(chat_data[0], output_dir=tmp_path / "int8")
    losses = losses_of(result)
    assert linear_types(tuner.model) == {"Linear8bitLt"} and losses[-1] < losses[0], losses
    assert (result.output_dir / "adapter_model.safetensors").is_file()


def test_merge_uses_the_dequantized_base_never_the_four_bit_one(nf4, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftsdk.merging.adapter import merge_adapter

    tuner, result = nf4
    merged_dir = merge_adapter(result.output_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert "quantization_config" not in merged.config.to_dict() and merged.dtype == torch.float32
    assert read_manifest(merged_dir)["base_weights"] == "dequantized"

    adapter = plugins.create("adapter", "qlora", read_manifest(result.output_dir)["adapter"]["config"])
    from ftsdk.models.loading import load_model, resolve

    placement = Placement("cpu", torch.float32)
    quantized = load_model(resolve(tuner.model_spec), tuner.model_spec, placement, "causal_lm",
                           **adapter.load_options(placement, "causal_lm"))
    dequantized = quantized.dequantize(dtype=torch.float32)
    reference = PeftModel.from_pretrained(dequantized, result.output_dir)
    torch.testing.assert_close(logits(merged), logits(reference), atol=1e-5, rtol=1e-5)
    gap_to_trained = (logits(merged) - logits(tuner.model)).abs().max().item()
    print(f"largest logit gap, merged vs the adapted 4-bit model: {gap_to_trained:.2e}")
    assert gap_to_trained < 5e-2  # bitsandbytes' CPU 4-bit matmul and TRL's adapter weights run in bfloat16

    original_dir = merge_adapter(result.output_dir, tmp_path / "original", base_weights="original")
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.output_dir)
    merged_original = logits(AutoModelForCausalLM.from_pretrained(original_dir))
    torch.testing.assert_close(merged_original, logits(original), atol=1e-5, rtol=1e-5)
    print(f"largest logit gap, original-base merge vs the adapted 4-bit model: "
          f"{(merged_original - logits(tuner.model)).abs().max().item():.2e}")
    assert read_manifest(original_dir)["base_weights"] == "original"


def test_loading_targets_the_placement_device_with_its_compute_dtype():
    adapter = plugins.create("adapter", "qlora", {})
    seen = adapter.load_options(Placement("cuda", torch.bfloat16), "sequence_classification")
    quantization = seen["quantization_config"]
    assert seen["device_map"] == {"": "cuda"} and quantization.load_in_4bit
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16 and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.llm_int8_skip_modules == ["score", "classifier"]  # the trained score head stays unquantized


def test_target_module_typo_is_caught_on_the_quantized_model(tiny_model_dir, chat_data, tmp_path):
    tuner = Tuner(str(tiny_model_dir), adapter="qlora", adapter_config={"target_modules": ["gate_prj"]})
    with pytest.raises(ConfigError, match="'gate_prj' -> did you mean 'gate_proj'"):
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
