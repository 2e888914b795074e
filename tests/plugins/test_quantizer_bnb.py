"""The bnb quantizer: 4-bit and 8-bit bitsandbytes checkpoints that reload with the very same logits."""

from __future__ import annotations

import pytest
import torch

from ftsdk import ConfigError, plugins
from ftsdk.artifacts import read_manifest
from ftsdk.quantizing.run import quantize

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
SETTINGS = {
    "nf4": {"bits": 4, "quant_type": "nf4"},
    "fp4": {"bits": 4, "quant_type": "fp4", "double_quant": False},
    "int8": {"bits": 8},
}


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def weight_bytes(folder):
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_checkpoint_reloads_with_identical_logits_and_is_smaller(setting, tiny_model_dir, tmp_path):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    config = SETTINGS[setting]
    output = quantize(tiny_model_dir, "bnb", tmp_path / setting, config=config)
    in_memory = plugins.create("quantizer", "bnb", config).load(tiny_model_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(output, device_map="cpu")
    layer = bnb.nn.Linear8bitLt if setting == "int8" else bnb.nn.Linear4bit
    assert isinstance(reloaded.model.layers[0].mlp.up_proj, layer)
    # bitsandbytes' CPU backend repacks 4-bit weights on the first forward, so compare first with first, then again
    for _ in range(2):
        torch.testing.assert_close(logits(reloaded), logits(in_memory), atol=1e-6, rtol=0)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    error = (logits(reloaded) - logits(original)).abs().max().item()
    assert 0 < error < 0.5  # quantized: close to the original, not equal to it
    manifest = read_manifest(output)
    assert manifest["quantizer"]["name"] == "bnb" and manifest["facts"]["quantized_layers"] == 14
    assert manifest["source"]["kind"] == "model" and "model.safetensors" in manifest["source"]["weights_sha256"]
    ratio = weight_bytes(output) / weight_bytes(tiny_model_dir)
    assert ratio < (0.5 if setting == "int8" else 0.45), ratio  # the fp32 embeddings stay as they are
    assert (output / "tokenizer.json").is_file() and "bitsandbytes" in manifest["libraries"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bits": 8, "quant_type": "fp4"}, "quant_type applies to 4-bit quantization only"),
        ({"bits": 4, "threshold": 4.0}, "threshold applies to 8-bit quantization only"),
        ({"bits": 3}, "bits"),
        ({"quant": "nf4"}, "Extra inputs are not permitted"),
        ({"compute_dtype": "float8"}, "compute_dtype"),
    ],
)
def test_config_errors(config, message, tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=message):
        quantize(tiny_model_dir, "bnb", tmp_path / "out", config=config)
    assert not (tmp_path / "out").exists()


def test_cuda_without_a_gpu_is_refused_before_loading(tiny_model_dir, tmp_path, no_model_loading):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        quantize(tiny_model_dir, "bnb", tmp_path / "out", config={"device": "cuda"})
