"""llama.cpp's KV cache type: what it costs an f32 GGUF against transformers, and that `ftsdk eval` names it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def f32_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ftsdk.gguf.convert import convert_model

    path = tmp_path_factory.mktemp("kv") / "tiny-f32.gguf"
    convert_model(tiny_model_dir, path, "f32")
    return path


def test_an_f16_kv_cache_costs_an_f32_gguf_precision_and_is_named(tiny_model_dir: Path, f32_gguf: Path) -> None:
    """Tiny model, 136 tokens: f16 cache (llama-cpp-python's default) 1.5e-4 from transformers, f32 cache 6e-7
    (SmolLM2-135M: ~1e-2 and ~3e-5, docs/evaluation.md)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsdk.evaluation.backends import kv_cache_type
    from ftsdk.gguf.runtime import load_gguf, sequence_log_probs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("the apple is red and the sky is blue, the grass is green and the sun is yellow " * 3)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        reference = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1).numpy()
    gaps = {}
    for options in ({}, {"type_k": 0, "type_v": 0}, {"type_k": 0, "type_v": 1}):
        llm = load_gguf(f32_gguf, n_ctx=256, **options)
        try:
            gaps[kv_cache_type(llm)] = float(np.abs(sequence_log_probs(llm, ids) - reference).max())
        finally:
            llm.close()
    assert set(gaps) == {"f16", "f32", "K f32, V f16"}
    assert gaps["f32"] < 1e-5 < gaps["f16"] and gaps["f16"] > 20 * gaps["f32"]


def test_eval_reports_the_kv_cache_of_a_gguf_candidate(f32_gguf: Path, tmp_path: Path) -> None:
    from ftsdk.evaluation.run import evaluate
    from ftsdk.testing.tiny import task_rows, write_jsonl

    data = write_jsonl(tmp_path / "test.jsonl", task_rows(4, seed=3))
    comparison = evaluate({"data": str(data), "limit": 2, "output_dir": str(tmp_path / "eval"), "candidates": [
        {"name": "gguf", "source": str(f32_gguf), "generation": {"max_new_tokens": 2}}]})
    assert comparison["gguf"].runtime == "llama.cpp (f16 KV cache)"
    reports = [p.read_text() for p in (tmp_path / "eval").rglob("*") if p.suffix in (".md", ".json", ".html")]
    assert reports and all("f16 KV cache" in text for text in reports if "runtime" in text)
    assert any("f16 KV cache" in text for text in reports)
