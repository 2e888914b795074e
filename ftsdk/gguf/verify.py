"""A GGUF checked against its transformers source on the same token ids: log-probs, top-1, perplexity, tokenizer.

Both sides score the token ids of the transformers tokenizer, so only the weights and the runtime differ.
llama.cpp runs with an f32 KV cache here (its default is f16), so an f32 GGUF must match to float error.

Tolerances per type (:data:`TOLERANCES`), and why:

* ``f32``: the same weights; only float32 summation order differs, ~1e-6 in log-prob measured, 1e-3 allowed.
* ``f16`` / ``bf16``: weights rounded to 11 / 8 significant bits (relative error <= 4.9e-4 / 3.9e-3): log-probs
  move by hundredths (f16) to tenths (bf16); perplexity within 1% / 2%.
* quantized types are judged by the perplexity ratio alone (a single log-prob can move a lot while the
  distribution stays as good). llama.cpp's own tables put q8_0 within ~0.1% and q4_k_m within a few percent
  of f16 on 7B models; small models lose more: SmolLM2-135M measured q8_0 1.009 and q4_k_m 1.117 (most rows
  of 576 fall back to q5_0) on the default texts. Allowed: q8_0 3%, q6_k 6%, q5_* 12%, q4_* 25%, q3_* 60%,
  q2_k 3x (the last two not measured here: loose on purpose, they only catch a broken file).
* every type: llama.cpp's tokenizer must give the transformers token ids on every text (agreement 1.0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: a few varied texts: prose, digits, punctuation, code and ChatML markers
DEFAULT_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the farmer counts 1234 sheep in the field.",
    "What is the color of the sky? Please answer with one word only: blue, green or red.",
    "def add(a, b):\n    return a + b  # adds two numbers, e.g. add(2, 3) == 5\n",
    ("<|im_start|>user\nWhere is my refund? I was charged twice for order 5521.<|im_end|>\n"
     "<|im_start|>assistant\nI am sorry to hear that. Let me check the billing team.<|im_end|>\n"),
)


@dataclass(frozen=True)
class Tolerance:
    """What a GGUF of one type must reach against its source (None: not judged)."""

    max_perplexity_ratio: float
    max_logprob_diff: float | None = None


TOLERANCES: dict[str, Tolerance] = {
    "f32": Tolerance(1.001, 1e-3),
    "f16": Tolerance(1.01, 0.1),
    "bf16": Tolerance(1.02, 0.5),
    "q8_0": Tolerance(1.03),
    "q6_k": Tolerance(1.06),
    **{t: Tolerance(1.12) for t in ("q5_0", "q5_1", "q5_k_s", "q5_k_m")},
    **{t: Tolerance(1.25) for t in ("q4_0", "q4_1", "q4_k_s", "q4_k_m")},
    **{t: Tolerance(1.6) for t in ("q3_k_s", "q3_k_m", "q3_k_l")},
    "q2_k": Tolerance(3.0),
}


def gguf_type_name(llm: Any) -> str | None:
    """The ftsdk type name of a loaded GGUF, from its ``general.file_type`` (None when not one of ours)."""
    import llama_cpp

    from ftsdk.gguf.types import TYPES

    code = llm.metadata.get("general.file_type")
    if code is None:
        return None
    return next((name for name, t in TYPES.items() if getattr(llama_cpp, t.ftype) == int(code)), None)


def judge(figures: dict[str, Any], type_name: str | None) -> list[str]:
    """What falls outside the type's tolerance (empty: it passed)."""
    failures = []
    if figures["tokenizer_agreement"] < 1.0:
        failures.append(f"llama.cpp tokenizes {1 - figures['tokenizer_agreement']:.0%} of the texts differently")
    tolerance = TOLERANCES.get(type_name or "")
    if tolerance is None:
        return failures
    ratio = figures["perplexity_ratio"]
    if not 1 / tolerance.max_perplexity_ratio <= ratio <= tolerance.max_perplexity_ratio:
        failures.append(f"perplexity ratio {ratio:.4f} is outside 1 ± its {type_name} tolerance "
                        f"(at most {tolerance.max_perplexity_ratio})")
    if tolerance.max_logprob_diff is not None and figures["max_abs_logprob_diff"] > tolerance.max_logprob_diff:
        failures.append(f"max |Δ log-prob| {figures['max_abs_logprob_diff']:.2e} exceeds the {type_name} tolerance "
                        f"{tolerance.max_logprob_diff}")
    return failures


def _reference_log_probs(model: Any, tokens: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([tokens])).logits[0].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def compare_with_transformers(gguf_folder_or_file: str | Path, reference_folder: str | Path,
                              texts: list[str] | tuple[str, ...] = DEFAULT_TEXTS, *, max_length: int = 256,
                              lora: str | Path | None = None, reference_adapter: str | Path | None = None
                              ) -> dict[str, Any]:
    """Score ``texts`` with the GGUF (llama.cpp) and with the transformers model in ``reference_folder``.

    Returns ``max_abs_logprob_diff`` (of the next tokens), ``top1_agreement``, both perplexities and their
    ``perplexity_ratio`` (GGUF / transformers), ``tokenizer_agreement``, ``tokens``, and the ``type`` with its
    ``tolerance``, ``failures`` and ``passed``. ``lora``/``reference_adapter``: a GGUF LoRA and its PEFT twin.
    """
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsdk.gguf.runtime import _file, load_gguf, sequence_log_probs
    from ftsdk.models.perplexity import encode_texts, perplexity_from_nll

    path = _file(gguf_folder_or_file)
    tokenizer = AutoTokenizer.from_pretrained(reference_folder)
    model = AutoModelForCausalLM.from_pretrained(reference_folder, dtype=torch.float32)
    if reference_adapter is not None:
        from ftsdk.models.peft_wrapping import load_adapter

        model = load_adapter(model, reference_adapter)
    model.eval()
    sequences = [ids for ids in encode_texts(tokenizer, list(texts), max_length=max_length) if len(ids) > 1]
    llm = load_gguf(path, lora=lora, n_ctx=max(len(ids) for ids in sequences), type_k=0, type_v=0)  # f32 KV cache
    try:
        same_tokens = [llm.tokenize(text.encode(), add_bos=True, special=True) == tokenizer(text)["input_ids"]
                       for text in texts]
        nll_gguf = nll_ref = diff = 0.0
        agree = count = 0
        for ids in sequences:
            ours, ref = sequence_log_probs(llm, ids)[:-1], _reference_log_probs(model, ids)[:-1]
            picked = np.arange(len(ids) - 1), np.asarray(ids[1:])
            nll_gguf -= ours[picked].sum()
            nll_ref -= ref[picked].sum()
            diff = max(diff, float(np.abs(ours[picked] - ref[picked]).max()))
            agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
            count += len(ids) - 1
        type_name = gguf_type_name(llm)
    finally:
        llm.close()
    ppl_gguf, ppl_ref = perplexity_from_nll(float(nll_gguf), count), perplexity_from_nll(float(nll_ref), count)
    figures: dict[str, Any] = {
        "type": type_name,
        "texts": len(sequences),
        "tokens": count,
        "max_abs_logprob_diff": diff,
        "top1_agreement": agree / count,
        "perplexity_gguf": ppl_gguf.value,
        "perplexity_reference": ppl_ref.value,
        "perplexity_ratio": ppl_gguf.value / ppl_ref.value,
        "tokenizer_agreement": sum(same_tokens) / len(same_tokens),
    }
    tolerance = TOLERANCES.get(type_name or "")
    figures["tolerance"] = asdict(tolerance) if tolerance else None
    figures["failures"] = judge(figures, type_name)
    figures["passed"] = not figures["failures"]
    return figures
