"""Perplexity equals transformers' own mean loss, batched with padding or not."""

from __future__ import annotations

import math

import pytest

from ftsdk.perplexity import perplexity, perplexity_from_nll

TEXTS = ["the cat sat on the mat", "a much longer text about billing and refunds for a customer who asked twice"]


def test_perplexity_matches_the_models_own_loss(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    nll, tokens = 0.0, 0
    for text in TEXTS:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.inference_mode():
            nll += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    batched = perplexity(model, tokenizer, TEXTS, batch_size=2)
    assert batched.tokens == tokens
    assert math.isclose(batched.value, math.exp(nll / tokens), rel_tol=1e-5)
    assert math.isclose(perplexity(model, tokenizer, TEXTS, batch_size=1).value, batched.value, rel_tol=1e-5)


def test_no_predicted_token_is_an_error():
    with pytest.raises(ValueError, match="no token"):
        perplexity_from_nll(0.0, 0)
