"""Tests of the last-blocks adapter, on ftsdk's tiny local Llama (no download, CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftsdk_last_blocks import LastBlocksAdapter, find_layers

from ftsdk import ConfigError, Tuner


def _tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_config_defaults_and_validation():
    config = LastBlocksAdapter().config
    assert (config.blocks, config.train_norm, config.train_head) == (2, True, False)
    with pytest.raises(ConfigError, match="adapter_config.blocks"):
        LastBlocksAdapter({"blocks": 0})
    with pytest.raises(ConfigError, match="adapter_config.block"):
        LastBlocksAdapter({"block": 1})  # a typo is an error, not silently ignored


def test_wrap_trains_only_the_last_blocks_and_the_final_norm(tiny_model_dir):
    model = _tiny(tiny_model_dir)
    wrapped = LastBlocksAdapter({"blocks": 1}).wrap(model)
    assert wrapped is model
    trainable = _trainable(model)
    assert trainable and all(n.startswith(("model.layers.1.", "model.norm.")) for n in trainable)
    assert "model.norm.weight" in trainable
    assert {n for n, _ in model.named_parameters() if n.startswith("model.layers.1.")} <= trainable


def test_train_norm_off_and_all_blocks(tiny_model_dir):
    model = LastBlocksAdapter({"blocks": 2, "train_norm": False}).wrap(_tiny(tiny_model_dir))
    trainable = _trainable(model)
    assert all(n.startswith("model.layers.") for n in trainable)
    assert any(n.startswith("model.layers.0.") for n in trainable)


def test_train_head_with_tied_embeddings_trains_the_embeddings(tiny_model_dir):
    model = _tiny(tiny_model_dir)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tiny model ties them
    LastBlocksAdapter({"blocks": 1, "train_head": True}).wrap(model)
    assert model.get_input_embeddings().weight.requires_grad


def test_too_many_blocks_is_a_config_error_with_a_hint(tiny_model_dir):
    with pytest.raises(ConfigError) as caught:
        LastBlocksAdapter({"blocks": 3}).check(_tiny(tiny_model_dir))
    assert "blocks is 3" in str(caught.value) and "only 2 transformer blocks" in str(caught.value)
    assert caught.value.hint and "1 to 2" in caught.value.hint


def test_gpt2_layout_is_found_too():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                       bos_token_id=0, eos_token_id=0))
    _, layers = find_layers(model)
    assert layers is model.transformer.h
    LastBlocksAdapter({"blocks": 2}).wrap(model)
    trainable = _trainable(model)
    assert "transformer.ln_f.weight" in trainable and "transformer.wte.weight" not in trainable
    assert {n.split(".")[2] for n in trainable if n.startswith("transformer.h.")} == {"1", "2"}


def test_a_model_without_blocks_is_refused():
    from torch import nn

    with pytest.raises(ConfigError, match="cannot find the transformer blocks"):
        LastBlocksAdapter().check(nn.Sequential(nn.Linear(4, 4)))


def test_fit_through_ftsdk_writes_a_full_model(registered, tiny_model_dir, chat_data, tmp_path):
    from transformers import AutoModelForCausalLM

    assert registered.cls.name == "last-blocks"
    tuner = Tuner(str(tiny_model_dir), adapter="last-blocks", adapter_config={"blocks": 1},
                  training={"max_steps": 2, "batch_size": 8, "logging_steps": 1})
    result = tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert result.manifest["kind"] == "model"
    assert result.manifest["adapter"]["name"] == "last-blocks"
    assert (tmp_path / "out" / "config.json").is_file()
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    reply = Tuner.load(tmp_path / "out").generate("what is the color of the sky", max_new_tokens=3)
    assert isinstance(reply, str)
