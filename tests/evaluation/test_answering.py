"""One prompt pass (shared prefix, length-grouped batches) gives what one sequence at a time gives, LoRA included."""

from __future__ import annotations

import pytest
import torch

from ftsdk.evaluation.answering import by_length, shared_prefix
from ftsdk.evaluation.backends import TransformersBackend
from ftsdk.evaluation.spec import GenerationOptions

SYSTEM = {"role": "system", "content": "reply with one colour word only, please"}
QUESTIONS = ["what is the sky", "the color of the apple please", "grass", "tell me the colour of snow in winter",
             "sun", "what colour is the deep sea at night when the moon is out"]
CONVERSATIONS = [[SYSTEM, {"role": "user", "content": q}] for q in QUESTIONS]
LABELS = ["blue", "red", "green yellow"]


def reference(model, tokenizer, conversation, max_new_tokens):
    """Greedy reply text and label log-probabilities, one sequence at a time, no cache, no padding."""
    prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids + reply])).logits[0, -1].argmax())
            reply.append(token)
            if token == tokenizer.convert_tokens_to_ids("<|im_end|>"):
                break
        scores = []
        for label in LABELS:
            label_ids = tokenizer(label + "<|im_end|>", add_special_tokens=False)["input_ids"]
            log_probs = model(input_ids=torch.tensor([ids + label_ids])).logits[0].log_softmax(-1)
            scores.append(sum(log_probs[len(ids) + i - 1, t].item() for i, t in enumerate(label_ids)))
    return tokenizer.decode(reply, skip_special_tokens=True).strip(), scores


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def lora(model):
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(copy.deepcopy(model), config).eval()


def check(backend, model, tokenizer, batch_size=4, max_new_tokens=6):
    generations, scores = backend.answer(CONVERSATIONS, GenerationOptions(max_new_tokens=max_new_tokens,
                                                                          batch_size=batch_size), LABELS)
    for conversation, generation, row in zip(CONVERSATIONS, generations, scores):
        text, expected = reference(model, tokenizer, conversation, max_new_tokens)
        assert generation.text == text
        assert row == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_one_pass_equals_one_sequence_at_a_time(tiny, batch_size):
    model, tokenizer = tiny
    check(TransformersBackend(model, tokenizer), model, tokenizer, batch_size=batch_size)


def test_lora_and_its_base_answer_as_one_sequence_at_a_time(tiny):
    model, tokenizer = tiny
    tuned = lora(model)
    check(TransformersBackend(tuned, tokenizer), tuned, tokenizer)
    with tuned.disable_adapter():
        base_scores = [reference(tuned, tokenizer, c, 2)[1] for c in CONVERSATIONS]
    _, scores = TransformersBackend(tuned, tokenizer, adapter_off=True).answer(
        CONVERSATIONS, GenerationOptions(max_new_tokens=2), LABELS)
    for row, expected in zip(scores, base_scores):
        assert row == pytest.approx(expected, abs=1e-4)


def test_prefix_and_length_batches():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix([[1, 2], [1, 2]]) == 1  # each prompt keeps a token of its own
    assert shared_prefix([[1], [2, 3]]) == 0
    assert by_length([[1], [1, 2, 3], [1, 2], [4, 5, 6, 7]], 2) == [[3, 1], [2, 0]]
