"""The gptq and awq quantizers (GPT-QModel): outputs transformers loads and runs, quality, early errors, missing backend."""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

import pytest

from ftsdk import plugins
from ftsdk.plugin.errors import ConfigError, PluginError, PluginUnavailableError
from ftsdk.plugin.jobs import QuantizeJob
from ftsdk.plugin.settings import validate_config
from ftsdk.quantizing.run import quantize
from ftsdk.testing.check_quantizer import check_quantizer_output_loads
from ftsdk.testing.inputs import calibration_texts
from ftsdk.testing.tiny import WORDS, TinySpec, build_tiny_model, write_jsonl
from ftsdk_plugins.quantizers import _gptqmodel
from ftsdk_plugins.quantizers.awq import AWQQuantizer
from ftsdk_plugins.quantizers.gptq import GPTQQuantizer

#: every layer of this model is 128 or 256 inputs wide and 64, 128 or 256 outputs: g32..g128 all fit
WIDE = TinySpec(hidden_size=128, intermediate_size=256)
#: 4 bits with per-group scales on a model trained for a few steps: measured ratios 0.998 (gptq g128), 1.004 (awq
#: g32); 1.15 leaves room for other CPUs' rounding and still fails a broken quantizer (garbage weights give
#: ratios of several times)
MAX_RATIO = 1.15

needs_gptqmodel = pytest.mark.skipif(
    importlib.util.find_spec("gptqmodel") is None or importlib.util.find_spec("optimum") is None,
    reason="GPT-QModel is not installed: pip install 'ftsdk[gptq]'",
)


def sentences(count: int, seed: int) -> list[str]:
    """Sentences of twelve random words of the tiny vocabulary."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(count)]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama trained for a few steps on word sentences and the color task, so quantization error shows in
    its perplexity (a random-init model predicts near-uniformly whatever its weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_model(tmp_path_factory.mktemp("gptq-source"), WIDE)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    texts = sentences(512, seed=1) + calibration_texts(128, seed=3)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(30):
        rows = torch.randint(0, len(texts), (16,))
        model(input_ids=batch.input_ids[rows], attention_mask=batch.attention_mask[rows], labels=labels[rows]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


def calibration() -> list[str]:
    return sentences(32, seed=4) + calibration_texts(32, seed=0)


HELD_OUT = sentences(16, seed=2)


def quantize_through_core(source: Path, method: str, output: Path, config: dict) -> dict:
    """Quantize with ftsdk.quantizing.run.quantize, calibrating on a text file; return the manifest."""
    data = write_jsonl(output.parent / f"{output.name}-calibration.jsonl", [{"text": t} for t in calibration()])
    quantize(source, method, output, config={**config, "quality_texts": HELD_OUT}, calibration=data)
    return json.loads((output / "ftsdk.json").read_text())


def assert_loads_and_generates(output: Path, layer_class: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(output)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == layer_class
    left = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head]
    assert left == []  # every linear layer but the output head was quantized
    tokenizer = AutoTokenizer.from_pretrained(output)
    prompt = tokenizer("what is the color of the", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == prompt.input_ids.shape[1] + 4


def assert_quality(manifest: dict) -> None:
    figures = manifest["quality"]["perplexity"]
    assert figures["texts"] == len(HELD_OUT)
    assert figures["source"] < 100  # the model learned something: a random one scores ~ the vocabulary size (384)
    assert figures["ratio"] == pytest.approx(figures["quantized"] / figures["source"], rel=1e-3)
    assert 1 / MAX_RATIO < figures["ratio"] < MAX_RATIO
    assert manifest["quality"]["layer_loss"]["max"] >= manifest["quality"]["layer_loss"]["mean"] > 0


@needs_gptqmodel
def test_gptq_4bit_g128_through_quantize(trained_dir, tmp_path):
    manifest = quantize_through_core(trained_dir, "gptq", tmp_path / "gptq-g128", {"bits": 4, "group_size": 128})
    saved = manifest["facts"]["quantization_config"]
    assert (saved["quant_method"], saved["bits"], saved["group_size"], saved["sym"]) == ("gptq", 4, 128, True)
    assert manifest["facts"]["device"] == "cpu" and manifest["facts"]["calibration_texts"] == 64
    assert manifest["warnings"] == []
    assert_quality(manifest)
    assert_loads_and_generates(tmp_path / "gptq-g128", "TorchAtenLinear")


@pytest.mark.slow  # ~10 s of CPU, most of it a second GPT-QModel process starting
@needs_gptqmodel
def test_gptq_4bit_g32_passes_the_quantizer_conformance_check(trained_dir, tmp_path):
    facts = check_quantizer_output_loads(GPTQQuantizer, {"group_size": 32, "quality_texts": HELD_OUT}, tmp_path,
                                         source=trained_dir, calibration=calibration(), min_correlation=0.99)
    assert facts["quantization_config"]["group_size"] == 32
    assert 1 / MAX_RATIO < facts["quality"]["perplexity"]["ratio"] < MAX_RATIO
    assert "quant_log.csv" in facts["files"] and "model.safetensors" in facts["files"]


@needs_gptqmodel
def test_awq_4bit_through_quantize(trained_dir, tmp_path):
    manifest = quantize_through_core(trained_dir, "awq", tmp_path / "awq", {"group_size": 32})
    saved = manifest["facts"]["quantization_config"]
    assert (saved["quant_method"], saved["version"], saved["zero_point"]) == ("awq", "gemm", True)
    assert manifest["facts"]["backend"] == "awq_torch"
    assert_quality(manifest)
    assert_loads_and_generates(tmp_path / "awq", "TorchAtenAwqLinear")


def test_group_size_not_dividing_a_layer_fails_before_any_work(tiny_model_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("GPT-QModel ran before the error")

    monkeypatch.setattr(_gptqmodel, "run_gptqmodel", refuse)
    with pytest.raises(ConfigError, match="group_size 128 does not divide the input width of 12 of the 14") as info:
        quantize(tiny_model_dir, "gptq", tmp_path / "out", config={"group_size": 128})
    assert "model.layers.0.self_attn.q_proj (64 inputs)" in str(info.value)
    assert info.value.hint == "use group_size 64 or 32 or 16 or -1"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="awq group_size 128"):
        AWQQuantizer({"group_size": 128}).check(tiny_model_dir, "model")


def test_awq_output_width_must_pack(tmp_path):
    source = build_tiny_model(tmp_path / "odd", TinySpec(hidden_size=128, intermediate_size=132))
    with pytest.raises(ConfigError, match="awq cannot quantize model.layers.0.mlp.gate_proj: its 132 outputs are "
                       "not a multiple of 64"):
        AWQQuantizer({"group_size": -1}).check(source, "model")
    with pytest.raises(ConfigError, match="group_size 32 does not divide") as info:  # down_proj: 132 inputs
        GPTQQuantizer({"group_size": 32}).check(source, "model")
    assert info.value.hint == "use group_size -1"
    GPTQQuantizer({"group_size": -1}).check(source, "model")


@pytest.mark.parametrize(
    ("cls", "config", "message"),
    [
        (GPTQQuantizer, {"bits": 5}, "bits"),
        (GPTQQuantizer, {"group_size": 100}, "group_size"),
        (GPTQQuantizer, {"damp_percent": 1.0}, "damp_percent"),
        (GPTQQuantizer, {"desc_act": True, "act_group_aware": True}, "cannot both be on"),
        (AWQQuantizer, {"bits": 8}, "bits"),
        (AWQQuantizer, {"version": "gemm"}, "version"),
    ],
)
def test_bad_options_are_config_errors(cls, config, message):
    with pytest.raises(ConfigError, match=message):
        cls(config)


def test_cpu_only_choices_fail_in_check(tiny_model_dir, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        GPTQQuantizer({"device": "cuda", "group_size": 32}).check(tiny_model_dir, "model")
    with pytest.raises(ConfigError, match="format 'gemv' is packed by GPT-QModel's CUDA kernels only"):
        AWQQuantizer({"format": "gemv", "group_size": 32}).check(tiny_model_dir, "model")


def test_gptq_options_reach_gptqmodel():
    gptqmodel = pytest.importorskip("gptqmodel")
    made = gptqmodel.GPTQConfig(**GPTQQuantizer({"bits": 8, "group_size": 32, "desc_act": True, "sym": False,
                                                 "damp_percent": 0.1, "true_sequential": False}).gptqmodel_kwargs())
    assert (made.bits, made.group_size, made.desc_act, made.act_group_aware, made.sym) == (8, 32, True, False, False)
    assert (made.damp_percent, made.true_sequential, made.format.value) == (0.1, False, "gptq")
    awq = gptqmodel.AWQConfig(**AWQQuantizer({"zero_point": False, "group_size": 64}).gptqmodel_kwargs())
    assert (awq.bits, awq.group_size, awq.sym, awq.format.value) == (4, 64, True, "gemm")


def test_worker_env_sizes_gptqmodel_pool_without_touching_ours(monkeypatch):
    monkeypatch.delenv("GPTQMODEL_CPU_WORKERS", raising=False)
    assert int(_gptqmodel.worker_env()["GPTQMODEL_CPU_WORKERS"]) == len(os.sched_getaffinity(0))
    assert "GPTQMODEL_CPU_WORKERS" not in os.environ
    monkeypatch.setenv("GPTQMODEL_CPU_WORKERS", "3")
    assert _gptqmodel.worker_env()["GPTQMODEL_CPU_WORKERS"] == "3"


@pytest.mark.slow  # ~8 s of CPU: GPT-QModel starting in its process
@needs_gptqmodel
def test_gptqmodel_crash_is_an_error_not_the_end_of_our_process(tiny_model_dir, tmp_path):
    # check() would refuse this model (v_proj has 32 outputs; AWQ's clip search needs 64): GPT-QModel's worker
    # asserts, and GPT-QModel ends its interpreter with os._exit(1), the child's, not this one
    with pytest.raises(PluginError, match="GPT-QModel failed \\(exit 1\\)"):
        AWQQuantizer({"group_size": 32}).quantize(QuantizeJob(tiny_model_dir, "model", tmp_path, calibration()))
    with pytest.raises(ConfigError, match="v_proj: its 32 outputs are not a multiple of 64"):
        AWQQuantizer({"group_size": 32}).check(tiny_model_dir, "model")


def test_held_out_texts_leave_out_the_calibration():
    from ftsdk.quantizing.calibration import builtin_texts

    passages = builtin_texts()
    config = validate_config(_gptqmodel.GPTQModelConfig, {"quality_samples": 4}, where="test")
    held = _gptqmodel.held_out_texts(config, passages[:-2])
    assert held == passages[-2:]
    assert _gptqmodel.held_out_texts(config, []) == passages[:4]


@pytest.mark.parametrize(("method", "extra"), [("gptq", "gptq"), ("awq", "awq")])
def test_missing_backend_is_listed_and_refused_before_work(method, extra, tiny_model_dir, tmp_path, monkeypatch,
                                                          no_model_loading):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "gptqmodel" else real_find_spec(name, *a, **k))
    info = plugins.get("quantizer", method)
    assert not info.available and info.missing == ["gptqmodel"]
    assert info.as_dict()["available"] is False
    with pytest.raises(PluginUnavailableError, match="needs packages that are not installed: gptqmodel") as raised:
        quantize(tiny_model_dir, method, tmp_path / "out", config={"group_size": 32})
    assert raised.value.hint == f"pip install 'ftsdk[{extra}]'"
    assert not (tmp_path / "out").exists()


@needs_gptqmodel
def test_installed_backend_is_available():
    assert plugins.get("quantizer", "gptq").available and plugins.get("quantizer", "awq").available


def test_job_without_calibration_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs calibration texts"):
        GPTQQuantizer({"group_size": 32}).quantize(QuantizeJob(tiny_model_dir, "model", tmp_path, None))
