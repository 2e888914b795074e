"""Batched chat generation with left padding, used by Tuner.generate and evaluation."""

from __future__ import annotations

from typing import Any

from ftsdk.data.formats import Conversation


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: list[Conversation],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int = 8,
    progress: bool = False,
) -> list[str]:
    """The assistant's reply to each conversation; greedy when ``temperature`` is 0."""
    import torch
    from tqdm.auto import tqdm

    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    replies: list[str] = []
    was_training = model.training
    model.eval()
    try:
        batches = range(0, len(prompts), batch_size)
        for start in tqdm(batches, desc="generating", unit="batch", disable=not progress):
            batch = tokenizer(
                prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            with torch.inference_mode():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    top_p=None,
                    top_k=None,
                    **sampling,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            replies += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return replies
