"""Perplexity equals transformers' own mean loss, batched with padding or not."""

from __future__ import annotations

import math

import pytest

from ftsdk.models.perplexity import perplexity, perplexity_from_nll

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


CONVERSATIONS = [
    [{"role": "system", "content": "You sort support tickets."},
     {"role": "user", "content": "my invoice is wrong, I was charged twice for the same month"},
     {"role": "assistant", "content": "billing"}],
    [{"role": "user", "content": "where is my parcel"}, {"role": "assistant", "content": "shipping, as far as I know"}],
]


def test_reply_perplexity_counts_the_reply_tokens_only(tiny_model_dir):
    """Hand computation from the logits: the reply's tokens (through <|im_end|>) after the generation prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsdk.evaluation.backends import TransformersBackend

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    reply_nll, reply_tokens, whole_nll, whole_tokens = 0.0, 0, 0.0, 0
    for conversation in CONVERSATIONS:
        prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
        reply = conversation[-1]["content"] + "<|im_end|>"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + reply_ids + tokenizer("\n", add_special_tokens=False)["input_ids"]  # the template's end
        with torch.inference_mode():
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        nll = [-log_probs[i - 1, ids[i]].item() for i in range(1, len(ids))]
        reply_nll += sum(nll[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(reply_ids)])
        reply_tokens += len(reply_ids)
        whole_nll, whole_tokens = whole_nll + sum(nll), whole_tokens + len(nll)
    scored = TransformersBackend(model, tokenizer).perplexity(CONVERSATIONS)
    assert (scored.reply.tokens, scored.whole.tokens) == (reply_tokens, whole_tokens)
    assert math.isclose(scored.reply.value, math.exp(reply_nll / reply_tokens), rel_tol=1e-5)
    assert math.isclose(scored.whole.value, math.exp(whole_nll / whole_tokens), rel_tol=1e-5)
    assert abs(scored.reply.value - scored.whole.value) > 1  # the prompt's tokens move the whole-conversation one
    model.train()  # a live model under training: scored without dropout, and left in train mode
    assert TransformersBackend(model, tokenizer).perplexity(CONVERSATIONS) == scored and model.training


def test_reply_tokens_keep_the_reply_when_the_prompt_is_cut(tiny_tokenizer):
    from ftsdk.evaluation.backends import reply_tokens

    def encode(text):
        return tiny_tokenizer(text, add_special_tokens=False)["input_ids"]

    ids, mask = reply_tokens(tiny_tokenizer, encode, CONVERSATIONS[0], 1000)
    cut_ids, cut_mask = reply_tokens(tiny_tokenizer, encode, CONVERSATIONS[0], 6)
    assert (cut_ids, cut_mask) == (ids[-6:], mask[-6:]) and sum(cut_mask) == sum(mask) > 0
    assert tiny_tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "billing<|im_end|>"


def test_split_perplexity_refuses_misaligned_masks():
    from ftsdk.models.perplexity import split_perplexity

    with pytest.raises(ValueError, match="3 token NLLs for a sequence of 3 tokens"):
        split_perplexity([[0.1, 0.2, 0.3]], [[False, True, True]])
