"""LoRA's data- and quantization-aware starts: EVA sets A from the training data's principal directions (same data,
same A; other data, other A) and its adapter reloads through PEFT; LoftQ starts from the quantization error and is
refused where PEFT cannot compute it or the result could not be reloaded."""

from __future__ import annotations

import json

import pytest
import torch

from ftsdk import ConfigError, Tuner
from ftsdk.testing.tiny import write_jsonl
from ftsdk_plugins.adapters.lora import LoraAdapter

TRAINING = {"learning_rate": 1e-3, "batch_size": 8, "seed": 7, "max_length": 64, "threads": 1, "max_steps": 1}
HAS_GPU = torch.cuda.is_available()
REAL_INITIALIZE = LoraAdapter.initialize


def number_rows(count: int) -> list[dict]:
    """Chat rows unlike the color task: arithmetic in digits."""
    return [{"messages": [{"role": "user", "content": f"{i} + {i * 7 % 13} = ?"},
                          {"role": "assistant", "content": str(i + i * 7 % 13)}]} for i in range(count)]


def eva_start(model_dir, data, out, monkeypatch, **adapter):
    """Train one step with init: eva; return the tuner and LoRA A of every layer right after EVA set it."""
    starts: dict[str, torch.Tensor] = {}

    def spy(self, model, job):
        REAL_INITIALIZE(self, model, job)
        starts.update({n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n})

    monkeypatch.setattr(LoraAdapter, "initialize", spy)
    tuner = Tuner(str(model_dir), adapter_config={"r": 4, "dropout": 0.0, "init": "eva", "eva_batches": 2,
                                                  **adapter}, training=TRAINING)
    tuner.fit(data, output_dir=out)
    return tuner, starts


def test_eva_starts_a_from_the_data(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    numbers = write_jsonl(tmp_path / "numbers.jsonl", number_rows(64))
    _, first = eva_start(tiny_model_dir, chat_data[0], tmp_path / "a", monkeypatch)
    _, again = eva_start(tiny_model_dir, chat_data[0], tmp_path / "b", monkeypatch)
    _, other = eva_start(tiny_model_dir, numbers, tmp_path / "c", monkeypatch)
    assert first and first.keys() == again.keys()
    assert all(torch.equal(first[n], again[n]) for n in first)  # same data: the same A
    shared = [n for n in first if n in other and first[n].shape == other[n].shape and first[n].numel()]  # rank 0: empty
    assert shared and all(not torch.allclose(first[n], other[n], atol=1e-4) for n in shared)  # other data, other A
    # A's rows are right singular vectors of the layer inputs: orthonormal, not Kaiming noise
    a = next(a for a in first.values() if a.numel())
    assert torch.allclose(a @ a.T, torch.eye(a.shape[0]), atol=1e-4)


def test_eva_redistributes_ranks_and_reloads_with_peft(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    import peft
    from transformers import AutoModelForCausalLM

    tuner, starts = eva_start(tiny_model_dir, chat_data[0], tmp_path / "run", monkeypatch, eva_rho=2.0)
    ranks = {n: a.shape[0] for n, a in starts.items()}
    assert max(ranks.values()) <= 8 and sum(ranks.values()) <= 4 * len(ranks)  # budget r x layers, at most rho x r
    saved = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert saved["init_lora_weights"] == "eva"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "run"))
    trained = dict(tuner.model.named_parameters())
    for name, param in loaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, trained[name])
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    tuner.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, tuner.model(ids).logits, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"init": "loftq", "loftq_bits": 3}, "loftq_bits"),
    ({"init": "loftq", "loftq_iter": 0}, "loftq_iter"),
    ({"loftq_bits": 8}, "need"),
    ({"eva_tau": 0.5}, "need"),
    ({"init": "eva", "eva_rho": 0.5}, "eva_rho"),
    ({"init": "eva", "eva_tau": 1.5}, "eva_tau"),
    ({"init": "loftq", "alpha": 32}, "scale 1"),
])
def test_bad_init_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        Tuner("tiny", adapter_config=options)


def test_loftq_with_a_quantized_base_is_refused_before_loading(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    monkeypatch.setattr(Tuner, "_load_base", lambda *a, **k: pytest.fail("loaded a model"))
    tuner = Tuner(str(tiny_model_dir), adapter="qlora", adapter_config={"init": "loftq"}, training=TRAINING)
    with pytest.raises(ConfigError, match="quantizes the base itself"):
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")


@pytest.mark.skipif(HAS_GPU, reason="checks the refusal on a machine without CUDA")
def test_loftq_without_a_gpu_is_refused_before_loading(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    monkeypatch.setattr(Tuner, "_load_base", lambda *a, **k: pytest.fail("loaded a model"))
    tuner = Tuner(str(tiny_model_dir), adapter_config={"init": "loftq"}, training=TRAINING)
    with pytest.raises(ConfigError, match="CUDA or XPU"):
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")


def test_eva_needs_conversations(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(Tuner, "_load_base", lambda *a, **k: pytest.fail("loaded a model"))
    rows = [{"prompt": "hi", "chosen": "a", "rejected": "b"}] * 4
    tuner = Tuner(str(tiny_model_dir), objective="dpo", adapter_config={"init": "eva"}, training=TRAINING)
    with pytest.raises(ConfigError, match="eva reads conversations"):
        tuner.fit(write_jsonl(tmp_path / "pairs.jsonl", rows), output_dir=tmp_path / "out")


def test_eva_on_a_sharded_model_is_refused():
    from types import SimpleNamespace

    job = SimpleNamespace(distributed=SimpleNamespace(strategy="fsdp2"))
    with pytest.raises(ConfigError, match="after the model is sharded"):
        LoraAdapter({"init": "eva"}).initialize(None, job)


@pytest.mark.skipif(not HAS_GPU, reason="PEFT 0.21 computes LoftQ on CUDA/XPU only")
def test_loftq_base_plus_lora_is_closer_to_the_full_weights_than_the_quantized_base(tiny_model_dir):
    import peft
    from transformers import AutoModelForCausalLM

    from ftsdk_plugins.adapters.lora import LoraConfig

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    full = {n: p.detach().clone() for n, p in base.named_parameters() if n.endswith("proj.weight")}
    config = LoraConfig(r=4, init="loftq", loftq_bits=4, target_modules=["q_proj", "down_proj"])
    model = peft.get_peft_model(base, peft.LoraConfig(task_type="CAUSAL_LM", **config.peft_kwargs()))
    checked = 0
    for name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            quantized = module.get_base_layer().weight
            original = full[name.removeprefix("base_model.model.") + ".weight"]
            assert a.abs().sum() > 0 and b.abs().sum() > 0
            with_lora = quantized + module.scaling["default"] * (b @ a)
            assert (original - with_lora).norm() < (original - quantized).norm()
            checked += 1
    assert checked


def test_a_saved_config_restating_every_default_is_taken_back():
    """Tuner.load revalidates the manifest's config, which names every field with its default."""
    from ftsdk import plugins

    cls = plugins.get("adapter", "lora").cls
    for init in ("eva", "gaussian"):
        dumped = cls.Config(init=init).model_dump()
        assert cls.Config.model_validate(dumped).init == init
