"""Attention kernel, padding-free batches and torch.compile: each option against its plain counterpart."""

from __future__ import annotations

import json

import pytest
import torch

from ftsdk import Tuner
from ftsdk.models.device import Placement
from ftsdk.models.loading import check_attention
from ftsdk.models.spec import ModelSpec
from ftsdk.plugin.errors import ConfigError
from ftsdk_plugins.objectives.sft import padding_free_wanted

TRAINING = {"max_steps": 3, "learning_rate": 5e-3, "batch_size": 4, "logging_steps": 1, "seed": 3, "max_length": 96,
            "threads": 1, "mixed_precision": "no"}


def losses_of(model_dir, data, folder, model=None, **training):
    tuner = Tuner(model or str(model_dir), adapter="lora", adapter_config={"r": 8, "dropout": 0.0},
                  training=TRAINING | training)
    result = tuner.fit(data, output_dir=folder)
    return [e["loss"] for e in result.log_history if "loss" in e]


def test_eager_and_sdpa_attention_give_the_same_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    ids = torch.randint(5, 100, (2, 13), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row: the masks must agree too
    logits = {}
    for kernel in ("eager", "sdpa"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=kernel, dtype=torch.float32)
        assert model.config._attn_implementation == kernel
        with torch.no_grad():
            logits[kernel] = model.eval()(ids, attention_mask=mask).logits
    torch.testing.assert_close(logits["eager"][0], logits["sdpa"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits["eager"][1, 4:], logits["sdpa"][1, 4:], atol=1e-5, rtol=0)


def test_the_model_spec_attention_reaches_the_model_and_trains_alike(tiny_model_dir, chat_data, tmp_path):
    runs = {kernel: losses_of(tiny_model_dir, chat_data[0], tmp_path / kernel,
                              model={"name": str(tiny_model_dir), "attn_implementation": kernel})
            for kernel in ("eager", "sdpa")}
    assert runs["eager"] == pytest.approx(runs["sdpa"], abs=1e-5)
    manifest = json.loads((tmp_path / "eager" / "ftsdk.json").read_text())
    assert manifest["base_model"]["spec"]["attn_implementation"] == "eager"


def test_an_unknown_attention_kernel_is_refused():
    with pytest.raises(ValueError, match="attn_implementation"):
        ModelSpec(attn_implementation="fast")


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_is_refused_without_cuda_before_loading(kernel, tiny_model_dir, chat_data, tmp_path,
                                                                 monkeypatch):
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    tuner = Tuner({"name": str(tiny_model_dir), "attn_implementation": kernel}, training=TRAINING)
    with pytest.raises(ConfigError, match="CUDA") as error:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert "sdpa" in error.value.hint


def test_flash_attention_is_refused_without_its_package_on_cuda(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    cuda = Placement("cuda", torch.bfloat16, native_bf16=True)
    with pytest.raises(ConfigError, match="flash_attn") as error:
        check_attention(ModelSpec(attn_implementation="flash_attention_2"), cuda)
    assert "pip install flash-attn" in error.value.hint
    check_attention(ModelSpec(attn_implementation="sdpa"), cuda)


@pytest.mark.parametrize("kernel", ["eager", "sdpa", "flex_attention"])
def test_a_padding_free_batch_scores_each_row_as_if_alone(kernel, tiny_model_dir):
    """TRL's padding-free collator puts rows end to end with restarting position ids and no mask; every CPU kernel
    of transformers 5 keeps them apart (a block-diagonal mask found from the position ids)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=kernel, dtype=torch.float32)
    model.eval().config.use_cache = False
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randint(5, 100, (n,), generator=generator).tolist() for n in (9, 17, 5)]
    examples = [{"input_ids": r, "labels": r} for r in rows]
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batch = collate(examples)
    assert batch["input_ids"].shape == (1, sum(map(len, rows))) and "attention_mask" not in batch

    def token_losses(logits, labels):
        return torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="none")

    with torch.no_grad():
        packed = token_losses(model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits,
                              batch["labels"])
        start = 0
        for row in rows:
            ids = torch.tensor([row])
            alone = token_losses(model(input_ids=ids).logits, ids)
            torch.testing.assert_close(packed[start:start + len(row) - 1], alone, atol=1e-5, rtol=0)
            start += len(row)


def test_padding_free_training_gives_the_same_losses(tiny_model_dir, chat_data, tmp_path):
    padded = losses_of(tiny_model_dir, chat_data[0], tmp_path / "padded", padding_free=False)
    free = losses_of(tiny_model_dir, chat_data[0], tmp_path / "free", padding_free=True)
    assert abs(padded[0] - free[0]) <= 1e-5, (padded, free)
    assert free == pytest.approx(padded, abs=1e-4)


def test_padding_free_reaches_trl_and_auto_is_off_on_cpu(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    import trl

    seen = []
    original = trl.SFTTrainer.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["args"].padding_free)
        original(self, *args, **kwargs)

    monkeypatch.setattr(trl.SFTTrainer, "__init__", spy)
    losses_of(tiny_model_dir, chat_data[0], tmp_path / "auto", max_steps=1)
    losses_of(tiny_model_dir, chat_data[0], tmp_path / "on", max_steps=1, padding_free=True)
    assert seen == [False, True]


@pytest.mark.parametrize(("setting", "device", "kernel", "expected"), [
    ("auto", "cpu", "sdpa", False),
    ("auto", "cpu", "flash_attention_2", False),
    ("auto", "cuda", "sdpa", False),
    ("auto", "cuda:0", "flash_attention_2", True),
    ("auto", "cuda", "flash_attention_3", True),
    (True, "cpu", "sdpa", True),
    (False, "cuda", "flash_attention_2", False),
])
def test_padding_free_auto_is_on_only_with_cuda_varlen_attention(setting, device, kernel, expected):
    assert padding_free_wanted(setting, device, kernel) is expected


def test_padding_free_with_replay_is_refused_before_loading(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded"))
    tuner = Tuner(str(tiny_model_dir), objective_config={"replay": {"data": str(chat_data[1]), "ratio": 0.25}},
                  training=TRAINING | {"padding_free": True})
    with pytest.raises(ConfigError, match="replay") as error:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert "padding_free: auto" in error.value.hint


def test_torch_compile_reaches_the_trainer_arguments(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    import trl

    seen = []

    def spy(self, *args, **kwargs):
        seen.append(kwargs["args"].torch_compile)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(trl.SFTTrainer, "__init__", spy)
    for compiled in (False, True):
        with pytest.raises(RuntimeError, match="stop before training"):
            losses_of(tiny_model_dir, chat_data[0], tmp_path / str(compiled), torch_compile=compiled)
    assert seen == [False, True]


@pytest.mark.slow
def test_a_compiled_run_gives_the_same_first_loss(tiny_model_dir, chat_data, tmp_path):
    """Slow: inductor compiles the tiny model's step in ~4 minutes on a cold cache (twice: step 2 recompiles),
    ~20 s when its on-disk cache is warm."""
    plain = losses_of(tiny_model_dir, chat_data[0], tmp_path / "plain", max_steps=2)
    compiled = losses_of(tiny_model_dir, chat_data[0], tmp_path / "compiled", max_steps=2, torch_compile=True)
    assert abs(plain[0] - compiled[0]) <= 1e-5, (plain, compiled)
