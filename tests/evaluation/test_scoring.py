"""Scoring: label matching, and constrained label likelihoods equal to an unbatched computation."""

from __future__ import annotations

import pytest
import torch

from ftsdk.evaluation.labels import choose_labels, label_log_likelihoods, score_labels

CONVERSATIONS = [
    [{"role": "system", "content": "reply with one word only"}, {"role": "user", "content": "what is the sky"}],
    [{"role": "user", "content": "the color of the apple please"}],
]
LABELS = ["blue", "red", "green yellow"]


def test_score_labels_normalizes_and_counts_invalid_replies():
    score = score_labels(["Billing.", "shipping", "I am not sure", "billing"], ["billing", "shipping", "billing", "sales"])
    assert score.accuracy == 0.5 and score.invalid_rate == 0.25
    assert score.per_label == {"billing": 0.5, "sales": 0.0, "shipping": 1.0}
    with pytest.raises(ValueError):
        score_labels(["a"], [])


def test_label_likelihoods_match_one_sequence_at_a_time(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batched = label_log_likelihoods(model, tokenizer, CONVERSATIONS, LABELS, batch_size=4)
    for conversation, row in zip(CONVERSATIONS, batched):
        for label, score in zip(LABELS, row):
            prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            reply_ids = tokenizer(label + "<|im_end|>", add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + reply_ids])
            with torch.no_grad():
                log_probs = model(input_ids=ids).logits[0].log_softmax(-1)
            expected = sum(log_probs[len(prompt_ids) + i - 1, token].item() for i, token in enumerate(reply_ids))
            assert score == pytest.approx(expected, abs=1e-4)
    choices = choose_labels(model, tokenizer, CONVERSATIONS, LABELS)
    assert choices == [LABELS[max(range(3), key=row.__getitem__)] for row in batched]
