"""GGUF export of every architecture the converter knows, on tiny random models of each.

Default run: llama.cpp (f32 KV cache) matches transformers on the same token ids for f32, f16, q8_0, q4_k_m
and GGUF LoRA; configs llama.cpp would compute differently are refused. With llama.cpp's own converter
installed in its venv (``benchmarks/gguf_reference_venv.sh``; skipped otherwise): ftsdk's GGUF equals its
output tensor for tensor, bit for bit, in f32, f16, bf16 and q8_0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ftsdk.gguf.verify import TOLERANCES
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import QuantizeJob
from ftsdk.testing.tiny import TINY_ARCHITECTURES, TinySpec, build_tiny_model
from ftsdk_plugins.quantizers.gguf import GGUFQuantizer

pytest.importorskip("llama_cpp")

#: rows that fit k-quants (256) and legacy quants (32); 4 heads of 64
FITTING = TinySpec(hidden_size=256, intermediate_size=512)
#: metadata ftsdk writes on purpose where llama.cpp's converter does not: what the transformers tokenizer
#: really does with BOS/EOS (the converter copies config flags), and Gemma 2's RoPE base (it leaves llama.cpp's
#: default, which only equals the config's by chance)
EXTRA_KEYS = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"}
EXTRA_KEYS_OF = {"gemma2": {"gemma2.rope.freq_base"}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model per architecture, built on first use."""

    class Models(dict):
        def __missing__(self, arch: str) -> Path:
            self[arch] = build_tiny_model(tmp_path_factory.mktemp(f"gguf-{arch}"), FITTING, arch)
            return self[arch]

    return Models()


def run(source: Path, folder: Path, kind: str = "model", **config) -> dict:
    folder.mkdir()
    return GGUFQuantizer(config).quantize(QuantizeJob(source, kind, folder))


def variant(source: Path, folder: Path, **changes) -> Path:
    """A copy of ``source`` with config.json keys changed (None removes the key)."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_f32_matches_transformers(arch: str, models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from ftsdk.gguf.verify import DEFAULT_TEXTS

    facts = run(models[arch], tmp_path / "out", type="f32")
    assert facts["architecture"] == {"mistral": "llama"}.get(arch, arch) and facts["warnings"] == []
    figures = facts["verification"]
    assert figures["passed"] and figures["tokenizer_agreement"] == 1.0 and figures["top1_agreement"] == 1.0
    # Gemma's GELU runs through a float16 lookup table in llama.cpp (~2e-4 here); the others ~1e-6
    assert figures["max_abs_logprob_diff"] < (1e-3 if arch.startswith("gemma") else 1e-5)
    if arch.startswith("gemma"):  # the texts cross the 16-token sliding window
        tokenizer = AutoTokenizer.from_pretrained(models[arch])
        assert max(len(tokenizer(text)["input_ids"]) for text in DEFAULT_TEXTS) > 16


@pytest.mark.parametrize("type_name", ["f16", "q8_0", "q4_k_m"])
@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_half_and_quantized_types(arch: str, type_name: str, models: dict[str, Path], tmp_path: Path) -> None:
    facts = run(models[arch], tmp_path / "out", type=type_name)
    main = {"f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K"}[type_name]
    assert facts["warnings"] == [] and facts["misfit_tensors"] == {}
    assert facts["tensor_types"][main] >= 5 and set(facts["tensor_types"]) <= {main, "Q6_K"}
    figures = facts["verification"]
    assert figures["passed"], figures["failures"]
    assert figures["tokenizer_agreement"] == 1.0 and figures["perplexity_ratio"] == pytest.approx(1, abs=0.02)
    if type_name == "f16":
        assert figures["max_abs_logprob_diff"] < TOLERANCES["f16"].max_logprob_diff


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_gguf_lora_matches_peft(arch: str, models: dict[str, Path], tmp_path: Path) -> None:
    import gguf
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(models[arch]), LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))  # B != 0: the adapter matters
    model.save_pretrained(tmp_path / "adapter")
    facts = run(tmp_path / "adapter", tmp_path / "out", kind="adapter", type="f32", base_model=str(models[arch]))
    layers = {"phi3": 4}.get(arch, 7)  # Phi-3 fuses qkv and gate/up
    assert facts["tensors"] == 2 * layers * FITTING.num_layers
    reader = gguf.GGUFReader(tmp_path / "out" / "lora-f32.gguf")
    assert reader.fields["general.architecture"].contents() == {"mistral": "llama"}.get(arch, arch)
    if arch == "phi3":
        assert "blk.0.attn_qkv.weight.lora_a" in {t.name for t in reader.tensors}
    figures = facts["verification"]  # base GGUF + GGUF LoRA in llama.cpp vs base + PEFT adapter in transformers
    assert figures["passed"] and figures["max_abs_logprob_diff"] < (1e-3 if arch.startswith("gemma") else 1e-4)


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe"])
def test_qwen2_and_llama3_pre_tokenizers_split_like_transformers(pre: str, models: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """Real Qwen2/2.5/3 and Llama 3 tokenizers: a regex split then bytes, and Qwen's NFC normalizer."""
    from transformers import AutoTokenizer

    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.runtime import load_gguf
    from ftsdk.gguf.vocab import PRE_TOKENIZERS

    folder = tmp_path / pre
    shutil.copytree(models["qwen2" if pre == "qwen2" else "llama"], folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    split, to_bytes = PRE_TOKENIZERS[pre]["pretokenizers"]
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split, {**to_bytes, "trim_offsets": True}]}
    data["normalizer"] = {"type": "NFC"} if pre == "qwen2" else None
    (folder / "tokenizer.json").write_text(json.dumps(data))
    text = "order 5521 was charged  twice:\n\n 19.99 and 2024's   <|im_end|>\tcafé 1234567"
    facts = convert_model(folder, tmp_path / f"{pre}.gguf", "f32")
    assert facts["pre_tokenizer"] == pre
    llm = load_gguf(tmp_path / f"{pre}.gguf", vocab_only=True)
    ids = AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
    assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids
    llm.close()


def test_configs_llama_cpp_computes_differently_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    quantizer = GGUFQuantizer({"type": "f16"})
    scaled = variant(models["gemma2"], tmp_path / "scaled", query_pre_attn_scalar=256)
    with pytest.raises(ConfigError, match="query_pre_attn_scalar 256 differs from head_dim 64"):
        quantizer.check(scaled, "model")
    layers = variant(models["gemma3"], tmp_path / "layers", layer_types=["full_attention", "sliding_attention"])
    with pytest.raises(ConfigError, match="not llama.cpp's fixed pattern"):
        quantizer.check(layers, "model")
    yarn = variant(models["qwen3"], tmp_path / "yarn", rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 64})
    with pytest.raises(ConfigError, match="RoPE scaling 'yarn' of Qwen3ForCausalLM is not converted"):
        quantizer.check(yarn, "model")
    biased = variant(models["qwen3"], tmp_path / "biased", attention_bias=True)
    with pytest.raises(ConfigError, match="attention biases"):
        quantizer.check(biased, "model")
    unknown = variant(models["llama"], tmp_path / "unknown", architectures=["FalconForCausalLM"])
    with pytest.raises(ConfigError, match="not FalconForCausalLM"):
        quantizer.check(unknown, "model")


def test_a_sliding_window_llama_cpp_ignores_is_a_warning(models: dict[str, Path], tmp_path: Path, caplog) -> None:
    from transformers import AutoTokenizer

    from ftsdk.gguf.verify import DEFAULT_TEXTS

    windowed = variant(models["mistral"], tmp_path / "windowed", sliding_window=32)
    tokenizer = AutoTokenizer.from_pretrained(windowed)
    assert max(len(tokenizer(text)["input_ids"]) for text in DEFAULT_TEXTS) > 32
    with pytest.warns(UserWarning, match="sliding_window 32 is below max_position_embeddings 256"):
        facts = run(windowed, tmp_path / "out", type="f32")
    # what the warning says, seen: llama.cpp attends beyond the window on the longer texts
    assert not facts["verification"]["passed"] and facts["verification"]["max_abs_logprob_diff"] > 1e-2
    assert any("sliding_window 32" in warning for warning in facts["warnings"])


def test_llama3_rope_and_phi3_longrope_write_their_factors(models: dict[str, Path], tmp_path: Path) -> None:
    import gguf

    from ftsdk.gguf.convert import convert_model

    llama3 = variant(models["llama"], tmp_path / "llama3", rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    longrope = variant(models["phi3"], tmp_path / "longrope", max_position_embeddings=512, rope_parameters={
        "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 256,
        "long_factor": [1.0 + i / 32 for i in range(32)], "short_factor": [1.0] * 32})
    for folder, tensors in ((llama3, {"rope_freqs.weight"}), (longrope, {"rope_factors_long.weight",
                                                                          "rope_factors_short.weight"})):
        convert_model(folder, tmp_path / f"{folder.name}.gguf", "f32")
        reader = gguf.GGUFReader(tmp_path / f"{folder.name}.gguf")
        assert tensors <= {t.name for t in reader.tensors}
    # llama.cpp strips whitespace after Phi-3's special tokens only when the model's name says phi3
    assert reader.fields["general.name"].contents() == "longrope (phi3)"
    from ftsdk.gguf.verify import compare_with_transformers

    for folder in (llama3, longrope):
        figures = compare_with_transformers(tmp_path / f"{folder.name}.gguf", folder)
        assert figures["passed"] and figures["max_abs_logprob_diff"] < 1e-4, (folder.name, figures)


# -- against llama.cpp's own converter ----------------------------------------------------------------

REFERENCE_TYPES = ("f32", "f16", "bf16", "q8_0")
#: config variants whose extra tensors and metadata are checked too: (source architecture, config.json changes)
VARIANTS: dict[str, tuple[str, dict]] = {
    "llama3-rope": ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                  "original_max_position_embeddings": 64}}),
    "llama-attention-bias": ("llama", {"attention_bias": True}),
    "phi3-longrope": ("phi3", {"max_position_embeddings": 512, "rope_parameters": {
        "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 256,
        "long_factor": [1.0 + i / 32 for i in range(32)], "short_factor": [1.0] * 32}}),
    "gemma3-linear-rope": ("gemma3", {"rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}),
}


def _variant_model(case: str, models: dict[str, Path], folder: Path) -> Path:
    source, changes = VARIANTS[case]
    folder = variant(models[source], folder, **changes)
    if case == "llama-attention-bias":  # biases in the weights too, not zeros
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(3)
        model = AutoModelForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("_proj.bias"):
                    parameter.normal_()
        model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """llama.cpp's converter's GGUF of every architecture in every type, and of every variant in f32, by
    ``(architecture or variant, type)``: one subprocess in the reference venv for all of them."""
    from ftsdk.gguf.reference import reference_convert, reference_python

    if reference_python() is None:
        pytest.skip("llama.cpp's converter is not installed in its venv: run benchmarks/gguf_reference_venv.sh "
                    "(or set FTSDK_GGUF_REFERENCE_VENV)")
    folder = tmp_path_factory.mktemp("gguf-reference")
    sources = {arch: models[arch] for arch in TINY_ARCHITECTURES}
    sources.update({case: _variant_model(case, models, folder / case) for case in VARIANTS})
    jobs = {(arch, t): (sources[arch], folder / f"{arch}-{t}.gguf", t) for arch in TINY_ARCHITECTURES
            for t in REFERENCE_TYPES}
    jobs.update({(case, "f32"): (sources[case], folder / f"{case}-f32.gguf", "f32") for case in VARIANTS})
    reference_convert(list(jobs.values()))
    files = {key: job[1] for key, job in jobs.items()}
    files.update({(case, "source"): sources[case] for case in VARIANTS})
    return files


def _same_as_reference(folder: Path, ours: Path, theirs: Path, type_name: str, arch: str) -> dict:
    from ftsdk.gguf.convert import convert_model
    from ftsdk.gguf.reference import compare_gguf

    if type_name == "q8_0":  # ftsdk quantizes with llama.cpp's C code, the converter in Python
        from ftsdk.gguf.quantize import quantize_gguf

        convert_model(folder, ours.with_suffix(".f32"), "f32")
        quantize_gguf(ours.with_suffix(".f32"), ours, "q8_0")
    else:
        convert_model(folder, ours, type_name)
    found = compare_gguf(ours, theirs)
    assert found["tensors"] == {} and found["only_ours"] == [] and found["only_theirs"] == [], found
    assert found["metadata"] == {} and found["metadata_only_theirs"] == [], found
    assert set(found["metadata_only_ours"]) == EXTRA_KEYS | EXTRA_KEYS_OF.get(arch, set()), found
    return found


@pytest.mark.parametrize("type_name", REFERENCE_TYPES)
@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_tensors_equal_llama_cpp_converter(arch: str, type_name: str, models: dict[str, Path], tmp_path: Path,
                                           reference: dict[tuple[str, str], Path]) -> None:
    found = _same_as_reference(models[arch], tmp_path / "ftsdk.gguf", reference[arch, type_name], type_name, arch)
    assert found["identical_tensors"] >= 15


@pytest.mark.parametrize("case", VARIANTS)
def test_variants_equal_llama_cpp_converter(case: str, tmp_path: Path,
                                            reference: dict[tuple[str, str], Path]) -> None:
    from ftsdk.gguf.verify import compare_with_transformers

    source = reference[case, "source"]
    _same_as_reference(source, tmp_path / "ftsdk.gguf", reference[case, "f32"], "f32", VARIANTS[case][0])
    figures = compare_with_transformers(tmp_path / "ftsdk.gguf", source)
    assert figures["passed"] and figures["top1_agreement"] == 1.0, figures
