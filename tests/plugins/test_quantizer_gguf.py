"""The gguf quantizer: conversion matches transformers, llama.cpp quantizes, the row-size trap is reported."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from ftsdk.gguf import gguf_file
from ftsdk.gguf.verify import TOLERANCES
from ftsdk.plugin.errors import ConfigError, ModelLoadError
from ftsdk.plugin.jobs import QuantizeJob
from ftsdk.testing.tiny import TinySpec, build_tiny_model
from ftsdk_plugins.quantizers.gguf import GGUFQuantizer

#: rows that fit k-quants (256) and legacy quants (32); 4 heads of 64
FITTING = TinySpec(hidden_size=256, intermediate_size=512)
TEXTS = ["what is the color of the banana please answer with one word", "route this ticket to the billing team 42"]


@pytest.fixture(scope="module")
def fitting_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("gguf-fit"), FITTING)


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rows of 48 and 80: no quantization block (32 or 256) divides them."""
    return build_tiny_model(tmp_path_factory.mktemp("gguf-odd"), TinySpec(hidden_size=48, intermediate_size=80))


def run(source: Path, folder: Path, kind: str = "model", **config) -> dict:
    folder.mkdir()
    return GGUFQuantizer(config).quantize(QuantizeJob(source, kind, folder))


def reader(path: Path):
    import gguf

    return gguf.GGUFReader(path)


def test_f32_matches_transformers_logits(fitting_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsdk.gguf.runtime import gguf_sequence_nll, load_gguf
    from ftsdk.models.perplexity import encode_texts, sequence_nll

    facts = run(fitting_model, tmp_path / "out", type="f32")
    assert facts["files"] == ["model-f32.gguf"] and facts["warnings"] == []
    assert gguf_file(tmp_path / "out").name == "model-f32.gguf"
    figures = facts["verification"]
    assert figures["passed"] and figures["tokenizer_agreement"] == 1.0 and figures["top1_agreement"] == 1.0
    assert figures["max_abs_logprob_diff"] < 1e-4
    # the runtime helpers on the same ids: llama.cpp (f32 KV cache) and transformers agree to float error
    tokenizer = AutoTokenizer.from_pretrained(fitting_model)
    ids = encode_texts(tokenizer, TEXTS)
    reference, count = sequence_nll(AutoModelForCausalLM.from_pretrained(fitting_model), ids)
    llm = load_gguf(tmp_path / "out", n_ctx=128, type_k=0, type_v=0)
    nll, gguf_count = gguf_sequence_nll(llm, ids)
    llm.close()
    assert gguf_count == count == sum(len(x) - 1 for x in ids)
    assert nll == pytest.approx(reference, rel=1e-5)
    # tokenizer metadata: ChatML template, special ids, the pre-tokenizer recognised from tokenizer.json
    fields = reader(gguf_file(tmp_path / "out")).fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"].contents() == tokenizer.pad_token_id
    assert fields["tokenizer.ggml.bos_token_id"].contents() == tokenizer.bos_token_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # as the transformers tokenizer: no BOS


@pytest.mark.parametrize(("type_name", "main_type"), [("q8_0", "Q8_0"), ("q4_k_m", "Q4_K")])
def test_quantized_types_load_and_stay_close(fitting_model: Path, tmp_path: Path, type_name: str, main_type: str):
    from ftsdk.gguf.runtime import load_gguf

    facts = run(fitting_model, tmp_path / "out", type=type_name)
    assert facts["files"] == [f"model-{type_name}.gguf"] and facts["warnings"] == []
    assert set(facts["tensor_types"]) <= {main_type, "Q6_K"} and facts["tensor_types"][main_type] >= 10
    assert not any(p.name != facts["files"][0] for p in (tmp_path / "out").iterdir())
    assert not list(tmp_path.glob(".gguf-intermediate-*"))  # the f32 intermediate is gone
    figures = facts["verification"]
    assert figures["passed"], figures["failures"]
    assert 0 < figures["max_abs_logprob_diff"] < (0.05 if type_name == "q8_0" else 0.5)  # quantized, not broken
    assert figures["perplexity_ratio"] == pytest.approx(1, abs=0.02)
    llm = load_gguf(tmp_path / "out", n_ctx=256)
    reply = llm.create_chat_completion([{"role": "user", "content": "what is the color of the sky"}], max_tokens=4)
    llm.close()
    assert reply["choices"][0]["message"]["role"] == "assistant"


def test_rows_not_fitting_k_quants_warn_and_list_tensors(tiny_model_dir: Path, tmp_path: Path, caplog) -> None:
    quantizer = GGUFQuantizer({"type": "q4_k_m", "verify": False})
    with caplog.at_level(logging.WARNING, logger="ftsdk.gguf"):
        quantizer.check(tiny_model_dir, "model")  # hidden 64: predicted from config.json
    assert "row 64 is not a multiple of 256" in caplog.text
    with pytest.raises(ConfigError, match="cannot be stored as q4_k_m"):
        GGUFQuantizer({"type": "q4_k_m", "on_misfit": "error"}).check(tiny_model_dir, "model")
    with pytest.warns(UserWarning, match="rows do not fit"):
        facts = run(tiny_model_dir, tmp_path / "out", type="q4_k_m", verify=False)
    (warning,) = facts["warnings"]
    assert "Q5_0 (row 64 is not a multiple of 256): " in warning and "attn_q x2" in warning and "ffn_down" in warning
    assert facts["misfit_tensors"]["blk.1.ffn_up.weight"] == "Q5_0 (row 64 is not a multiple of 256)"
    assert len(facts["misfit_tensors"]) == 15  # every 2-D weight: token_embd and 7 per block
    assert "Q4_K" not in facts["tensor_types"]


def test_nothing_quantized_is_an_error(odd_model: Path, tmp_path: Path) -> None:
    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.quantize import quantize_gguf, tensor_report
    from ftsdk.gguf.types import TYPES

    with pytest.raises(ConfigError, match="no weight of this model can be stored as q8_0"):
        GGUFQuantizer({"type": "q8_0"}).check(odd_model, "model")
    # what llama.cpp does when asked anyway: success, and every weight left in F16 (its log says so too)
    convert_model(odd_model, tmp_path / "f32.gguf", "f32")
    report = quantize_gguf(tmp_path / "f32.gguf", tmp_path / "q4.gguf", "q4_k_m")
    assert report == tensor_report(tmp_path / "q4.gguf", TYPES["q4_k_m"])
    assert report.quantized == 0 and report.types == {"F16": 15}
    assert GGUFQuantizer({"type": "f16", "verify": False}).check(odd_model, "model") is None  # floats always fit


@pytest.mark.parametrize(("model", "type_name"), [("tiny_model_dir", "q4_k_m"), ("tiny_model_dir", "q3_k_m"),
                                                  ("fitting_model", "q4_k_m"), ("fitting_model", "q5_0")])
def test_report_from_llama_log_equals_read_back(model: str, type_name: str, tmp_path: Path, request) -> None:
    """What quantize_gguf reads from llama.cpp's log is what GGUFReader finds in the file (hidden 64 and 256)."""
    import ctypes

    import llama_cpp

    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.quantize import logged_tensors, quantize_gguf, tensor_report
    from ftsdk.gguf.runtime import captured_llama_log
    from ftsdk.gguf.types import TYPES

    def current_callback() -> int | None:
        callback, data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
        llama_cpp.llama_log_get(ctypes.byref(callback), ctypes.byref(data))
        return ctypes.cast(callback, ctypes.c_void_p).value

    convert_model(request.getfixturevalue(model), tmp_path / "f32.gguf", "f32")
    before = current_callback()
    with captured_llama_log() as lines:
        report = quantize_gguf(tmp_path / "f32.gguf", tmp_path / "out.gguf", type_name)
    assert current_callback() == before  # llama-cpp-python's callback is back
    read_back = tensor_report(tmp_path / "out.gguf", TYPES[type_name])
    assert report == read_back and list(report.misfits) == list(read_back.misfits) and report.quantized > 0
    logged = logged_tensors(lines)  # the nested capture saw the same log
    assert logged is not None and len(logged) == 2 + 9 * 2  # token_embd, output_norm, 9 per block
    missing_one = [line for line in lines if "blk.1.ffn_up.weight" not in line]
    assert logged_tensors(missing_one) is None  # a log missing a tensor is not trusted: the file is read back


def test_lora_adapter_matches_peft(fitting_model: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(fitting_model), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"], init_lora_weights=False))  # B != 0: the adapter matters
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ConfigError, match="not q4_k_m"):
        GGUFQuantizer({"type": "q4_k_m"}).check(tmp_path / "adapter", "adapter")
    facts = run(tmp_path / "adapter", tmp_path / "out", kind="adapter", type="f32", base_model=str(fitting_model))
    assert facts["files"] == ["lora-f32.gguf"] and facts["rank"] == 8 and facts["tensors"] == 2 * 7 * 2
    fields = reader(tmp_path / "out" / "lora-f32.gguf").fields
    assert fields["general.type"].contents() == "adapter" and fields["adapter.lora.alpha"].contents() == 16
    figures = facts["verification"]  # base GGUF + GGUF LoRA in llama.cpp vs base + PEFT adapter in transformers
    assert figures["passed"] and figures["max_abs_logprob_diff"] < 1e-4


def test_bad_config_and_sources_fail_before_work(fitting_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="type"):
        GGUFQuantizer({"type": "q4_k_x"})
    with pytest.raises(ConfigError, match="intermediate"):
        GGUFQuantizer({"intermediate": "f16"})
    with pytest.raises(ModelLoadError, match="config.json does not exist"):
        GGUFQuantizer().check(tmp_path, "model")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ConfigError, match="not GPT2LMHeadModel"):
        GGUFQuantizer().check(gpt2, "model")
    odd_tokenizer = tmp_path / "odd-tokenizer"
    shutil.copytree(fitting_model, odd_tokenizer)
    data = json.loads((odd_tokenizer / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (odd_tokenizer / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="no llama.cpp pre-tokenizer is known"):
        GGUFQuantizer().check(odd_tokenizer, "model")
    GGUFQuantizer({"pre_tokenizer": "gpt-2"}).check(odd_tokenizer, "model")  # the user may name it


def test_smollm_pre_tokenizer_splits_digits_like_transformers(fitting_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.runtime import load_gguf

    digits = tmp_path / "digits"
    shutil.copytree(fitting_model, digits)
    data = json.loads((digits / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, data["pre_tokenizer"]]}  # SmolLM2's pre-tokenizer
    (digits / "tokenizer.json").write_text(json.dumps(data))
    text = "order 5521 was charged twice: 19.99 and 2024 <|im_end|>"
    for folder, expected in ((fitting_model, "gpt-2"), (digits, "smollm")):
        facts = convert_model(folder, tmp_path / f"{expected}.gguf", "f32")
        assert facts["pre_tokenizer"] == expected
        llm = load_gguf(tmp_path / f"{expected}.gguf", vocab_only=True)
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == AutoTokenizer.from_pretrained(folder)(text)[
            "input_ids"]
        llm.close()


def test_through_the_core_api_output_is_atomic(fitting_model: Path, odd_model: Path, tmp_path: Path) -> None:
    from ftsdk.artifacts import read_manifest
    from ftsdk.quantizing.run import quantize

    folder = quantize(fitting_model, "gguf", tmp_path / "q8", config={"type": "q8_0", "verify": False})
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".gguf") == ["model-q8_0.gguf"]
    assert read_manifest(folder)["quantizer"]["config"]["type"] == "q8_0"
    with pytest.raises(ConfigError):
        quantize(odd_model, "gguf", tmp_path / "odd", config={"type": "q4_k_m"})
    assert not (tmp_path / "odd").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q8"]  # no temporary folder or intermediate left


@pytest.mark.parametrize("type_name", ["f16", "bf16"])
def test_half_precision_types(fitting_model: Path, tmp_path: Path, type_name: str) -> None:
    facts = run(fitting_model, tmp_path / "out", type=type_name)
    assert facts["tensor_types"] == {type_name.upper(): 15} and facts["intermediate"] is None
    figures = facts["verification"]
    assert figures["passed"], figures["failures"]
    assert 0 < figures["max_abs_logprob_diff"] < TOLERANCES[type_name].max_logprob_diff


def test_bf16_intermediate(fitting_model: Path, tmp_path: Path) -> None:
    facts = run(fitting_model, tmp_path / "out", type="q8_0", intermediate="bf16")
    assert facts["intermediate"] == "bf16" and facts["tensor_types"] == {"Q8_0": 15}
    assert facts["verification"]["passed"]


@pytest.mark.slow
def test_smollm2_q4_k_m_keeps_perplexity_and_chats(smollm2_dir: Path, tmp_path: Path) -> None:
    from ftsdk.artifacts import read_manifest
    from ftsdk.gguf.quantize import tensor_report
    from ftsdk.gguf.runtime import load_gguf
    from ftsdk.gguf.types import TYPES
    from ftsdk.quantizing.run import quantize

    with pytest.warns(UserWarning, match="row 576 is not a multiple of 256"):  # hidden 576: the row-size trap
        folder = quantize(smollm2_dir, "gguf", tmp_path / "q4", config={"type": "q4_k_m"})
    manifest = read_manifest(folder)
    facts = manifest["facts"]
    read_back = tensor_report(folder / "model-q4_k_m.gguf", TYPES["q4_k_m"])  # the log's report is the file's
    assert facts["tensor_types"] == read_back.types and list(facts["misfit_tensors"].items()) == list(
        read_back.misfits.items())
    assert facts["tensor_types"]["Q4_K"] >= 1 and facts["tensor_types"]["Q5_0"] >= 100  # ffn_down (1536) fits
    figures = facts["verification"]  # against the float32 transformers model, same token ids
    assert figures["passed"] and figures["tokenizer_agreement"] == 1.0
    assert 1.0 < figures["perplexity_ratio"] < 1.25
    assert (folder / "model-q4_k_m.gguf").stat().st_size < 0.25 * (smollm2_dir / "model.safetensors").stat().st_size
    llm = load_gguf(folder, n_ctx=512, logits_all=False)
    reply = llm.create_chat_completion([{"role": "user", "content": "Name three colors."}], max_tokens=24,
                                       temperature=0)["choices"][0]["message"]["content"]
    llm.close()
    assert any(color in reply.lower() for color in ("red", "blue", "green")), reply


def test_conformance_output_loads_in_llama_cpp(fitting_model: Path, tmp_path: Path) -> None:
    from ftsdk.testing.check_quantizer import check_quantizer_output_loads

    facts = check_quantizer_output_loads(GGUFQuantizer, {"type": "q8_0", "verify": False}, tmp_path,
                                         source=fitting_model, min_correlation=0.99)
    assert facts["files"] == ["model-q8_0.gguf"]
