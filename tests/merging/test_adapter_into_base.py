"""Merging adapters into their base: plain PEFT folders, refusals before loading, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from ftsdk import ConfigError, OutputExistsError
from ftsdk.artifacts import read_manifest, write_manifest
from ftsdk.cli import main
from ftsdk.merging.adapter import merge_adapter

IDS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def plain_lora(tiny_model_dir, tmp_path_factory):
    """A LoRA folder written by PEFT alone (no ftsdk manifest, no tokenizer), with non-zero updates."""
    import peft

    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "up_proj"], init_lora_weights=False)
    model = peft.get_peft_model(load(tiny_model_dir), config)
    folder = tmp_path_factory.mktemp("plain") / "lora"
    model.save_pretrained(folder)
    with torch.no_grad():
        return folder, model.eval()(input_ids=IDS).logits



def test_plain_peft_folder_merges_into_the_base_it_names(plain_lora, tiny_model_dir, tmp_path):
    folder, adapted = plain_lora
    output = merge_adapter(folder, tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(load(output)(input_ids=IDS).logits, adapted, atol=1e-5, rtol=1e-5)
    manifest = read_manifest(output)
    assert manifest["merged_adapter"]["peft_type"] == "LORA" and manifest["merged_adapter"]["trained_with"] is None
    assert manifest["base_model"]["reference"] == str(tiny_model_dir) and manifest["tokenizer_from"] == "base model"
    assert (output / "tokenizer.json").is_file() and (output / "README.md").read_text().startswith("---")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    from ftsdk import Tuner

    reopened = Tuner.load(output)
    with torch.no_grad():
        torch.testing.assert_close(reopened.model(input_ids=IDS).logits, adapted, atol=1e-5, rtol=1e-5)
    assert isinstance(reopened.generate("hi", max_new_tokens=2), str)


def test_base_model_override_and_the_cli(plain_lora, tiny_model_dir, tmp_path, capsys):
    folder, adapted = plain_lora
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (moved / name).write_bytes((folder / name).read_bytes())
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": None}))
    with pytest.raises(ConfigError, match="pass base_model="):
        merge_adapter(moved, tmp_path / "nowhere")
    code = main(["merge-adapter", str(moved), str(tmp_path / "out"), "--base-model", str(tiny_model_dir)])
    assert code == 0 and json.loads(capsys.readouterr().out)["output_dir"] == str(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(load(tmp_path / "out")(input_ids=IDS).logits, adapted, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prompt_learning_adapters_are_refused_before_loading(method, tmp_path, no_model_loading):
    import peft

    config_class = peft.PrefixTuningConfig if method == "prefix" else peft.PromptTuningConfig
    config_class(num_virtual_tokens=4, task_type="CAUSAL_LM", base_model_name_or_path="org/model").save_pretrained(
        tmp_path / "adapter"
    )
    with pytest.raises(ConfigError, match="cannot be merged") as caught:
        merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    assert "PeftModel.from_pretrained" in str(caught.value) and not (tmp_path / "merged").exists()


def test_full_model_and_non_adapter_folders_are_refused(tmp_path, no_model_loading):
    (tmp_path / "full").mkdir()
    write_manifest(tmp_path / "full", {"kind": "model", "adapter": {"name": "full"}})
    with pytest.raises(ConfigError, match="holds a full model .adapter 'full'.: there is nothing to merge"):
        merge_adapter(tmp_path / "full", tmp_path / "merged")
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        merge_adapter(tmp_path, tmp_path / "merged")
    code = main(["merge-adapter", str(tmp_path), str(tmp_path / "merged")])
    assert code == 2


def test_existing_output_and_bad_options_are_refused_before_loading(plain_lora, tmp_path, no_model_loading):
    folder, _ = plain_lora
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        merge_adapter(folder, tmp_path / "taken")
    with pytest.raises(ConfigError, match="base_weights must be"):
        merge_adapter(folder, tmp_path / "merged", base_weights="dequantised")
    with pytest.raises(ConfigError, match="base model.dtype"):
        merge_adapter(folder, tmp_path / "merged", dtype="float8")
