"""Every architecture end to end on tiny random models: adapters resolve their layers from the model, train and
reload (the conformance kit), a trained LoRA merges into its base and the merged model exports to GGUF, and
``ftsdk serve`` answers as the library it wraps (transformers+peft, and llama.cpp with a GGUF LoRA).

The GGUF types per architecture are in tests/gguf/test_architectures.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ftsdk.plugin.errors import ConfigError
from ftsdk.testing import conformance
from ftsdk.testing.tiny import TINY_ARCHITECTURES, TinySpec, build_tiny_model, task_rows, write_jsonl

#: rows that fit k-quants (256); 4 heads of 64
SPEC = TinySpec(hidden_size=256, intermediate_size=512)
LORA = {"r": 4, "dropout": 0.0}
PROMPT = "what is the color of the sky"
MAX_TOKENS = 6


class _Built(dict):
    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, arch: str) -> Path:
        self[arch] = build_tiny_model(self.factory.mktemp(f"arch-{arch}"), SPEC, arch)
        return self[arch]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model per architecture, built on first use."""
    return _Built(tmp_path_factory)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("arch-data") / "train.jsonl", task_rows(16, seed=1))


@pytest.fixture(scope="module")
def trained(models: dict[str, Path], data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA (attention and MLP layers, found in the model) trained a few steps per architecture."""

    class Trained(dict):
        def __missing__(self, arch: str) -> Path:
            out = tmp_path_factory.mktemp(f"trained-{arch}")
            conformance.check_adapter_trains("lora", {**LORA, "target_modules": "attention+mlp"}, out,
                                             model_dir=models[arch], data=data)
            self[arch] = out / "lora-trained"
            return self[arch]

    return Trained()


# -- target modules per architecture -------------------------------------------------------------------


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_adapter_layers_are_found_in_the_model(arch: str, models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    from ftsdk import plugins
    from ftsdk_plugins.adapters._peft import layer_groups

    model = AutoModelForCausalLM.from_pretrained(models[arch])
    groups = layer_groups(model)
    if arch == "phi3":  # fused projections
        assert groups == {"attention": ["o_proj", "qkv_proj"], "mlp": ["down_proj", "gate_up_proj"]}
        with pytest.raises(ConfigError, match="did you mean 'qkv_proj'"):  # a Llama recipe's names
            plugins.create("adapter", "lora", {"target_modules": ["q_proj", "v_proj"]}).check(model)
    else:
        assert groups == {"attention": ["k_proj", "o_proj", "q_proj", "v_proj"],
                          "mlp": ["down_proj", "gate_proj", "up_proj"]}
    lora = plugins.create("adapter", "lora", {"target_modules": "attention"})
    assert lora.peft_kwargs(model)["target_modules"] == groups["attention"]
    ia3 = plugins.create("adapter", "ia3", {}).peft_kwargs(model)
    assert ia3["feedforward_modules"] == ["down_proj"] and set(ia3["feedforward_modules"]) < set(ia3["target_modules"])


# -- train: the conformance kit over architectures ------------------------------------------------------


@pytest.mark.parametrize("adapter", ["dora", "ia3", "qlora"])
@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_adapter_trains_and_reloads(arch: str, adapter: str, models: dict[str, Path], data: Path,
                                    tmp_path: Path) -> None:
    if adapter == "qlora":
        pytest.importorskip("bitsandbytes")
    config = {} if adapter == "ia3" else {**LORA, "target_modules": "all-linear"}
    tolerance = 1e-2 if adapter == "qlora" else 1e-4  # 4-bit base: reloading re-quantizes
    result = conformance.check_adapter_trains(adapter, config, tmp_path, model_dir=models[arch], data=data,
                                              tolerance=tolerance)
    assert result.manifest["adapter"]["name"] == adapter


def test_conformance_kit_builds_the_architecture_asked(data: Path, tmp_path: Path) -> None:
    import json

    result = conformance.check_adapter_trains("lora", LORA, tmp_path, data=data, architecture="gemma3")
    base = Path(result.manifest["base_model"]["source"])
    assert json.loads((base / "config.json").read_text())["architectures"] == ["Gemma3ForCausalLM"]


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_lora_trains_merges_and_exports(arch: str, models: dict[str, Path], trained: dict[str, Path],
                                        tmp_path: Path) -> None:
    """LoRA trained (conformance kit), merged into its base (ftsdk export) as computed, the merge in GGUF."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.verify import compare_with_transformers
    from ftsdk.merging.adapter import merge_adapter

    merged = merge_adapter(trained[arch], tmp_path / "merged")
    ids = torch.tensor([[5, 17, 42, 99, 7, 300, 12]])
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models[arch]), str(trained[arch]))
    with torch.no_grad():
        expected = adapted.eval()(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    convert_model(merged, tmp_path / "merged.gguf", "f32")
    figures = compare_with_transformers(tmp_path / "merged.gguf", merged)
    assert figures["passed"] and figures["top1_agreement"] == 1.0, figures["failures"]


# -- merge: the conformance kit's merger check over architectures --------------------------------------


@pytest.mark.parametrize("merger", ["linear", "task_arithmetic", "peft_adapters"])
@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_mergers_merge_every_architecture(arch: str, merger: str, models: dict[str, Path], tmp_path: Path) -> None:
    if merger == "peft_adapters":  # LoRA adapters of the base (Phi-3: on its fused qkv_proj)
        conformance.check_merger(merger, tmp_path, inputs="adapters", base=models[arch],
                                 parameters={"combination_type": "cat"})
    else:
        conformance.check_merger(merger, tmp_path, base=models[arch], parameters={"weight": 0.5})


# -- serve ---------------------------------------------------------------------------------------------


def _served(config: dict[str, Any], model: str) -> str:
    from fastapi.testclient import TestClient

    from ftsdk.serving.config import ServeConfig
    from ftsdk.serving.server import build_app

    with TestClient(build_app(ServeConfig(**config))) as client:
        reply = client.post("/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                                                     "temperature": 0})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["text"]


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_serve_transformers_backend(arch: str, models: dict[str, Path], trained: dict[str, Path]) -> None:
    pytest.importorskip("fastapi")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models[arch])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models[arch]), str(trained[arch])).eval()
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS,
                             do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    served = _served({"base": str(models[arch]), "adapters": {"tuned": str(trained[arch])}, "threads": 1}, "tuned")
    assert served == expected


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_serve_llamacpp_backend_with_gguf_lora(arch: str, models: dict[str, Path], trained: dict[str, Path],
                                                tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("llama_cpp")
    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.lora import convert_adapter
    from ftsdk.gguf.runtime import load_gguf

    base, lora = tmp_path / "base.gguf", tmp_path / "tuned.gguf"
    convert_model(models[arch], base, "f32")
    convert_adapter(trained[arch], lora, "f32", base=models[arch])
    llm = load_gguf(base, lora=lora, n_ctx=0, logits_all=False)
    expected = llm.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0)["choices"][0]["text"]
    llm.close()
    served = _served({"base": str(base), "backend": "llamacpp", "adapters": {"tuned": str(lora)}, "threads": 1},
                     "tuned")
    assert served == expected
