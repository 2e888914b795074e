"""One prompt pass for greedy replies and label scores: the shared prefix's KV computed once, batches by length."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from ftsdk.data.formats import Conversation


@dataclass(frozen=True)
class Answers:
    """Greedy replies (token ids of each, generation seconds of each) and, when labels were given, label scores."""

    tokens: list[list[int]]
    seconds: list[float]
    scores: list[list[float]] | None


def generation_ids(tokenizer: Any, conversations: list[Conversation]) -> list[list[int]]:
    """The token ids generation starts from: the chat template with its generation prompt."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def shared_prefix(prompts: list[list[int]]) -> int:
    """Length of the token prefix every prompt shares, leaving each prompt at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    length = 0
    while length < shortest - 1 and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


def by_length(prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (longest first), so batches carry little padding."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def answer(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_new_tokens: int, batch_size: int,
           labels: tuple[Any, Any] | None = None) -> Answers:
    """Greedy replies to ``prompts`` (token ids) and, with ``labels`` (reply ids and mask of
    :func:`ftsdk.evaluation.labels.reply_table`), each label's log-probability after each prompt.

    The shared prefix (typically the system prompt) runs once; every batch starts from a copy of its KV cache.
    Prompts are padded between the prefix and their own tokens, so all of them end at the last column. Scoring
    reuses the prompt pass of generation (its cache cut back to the prompt).
    """
    import torch

    from ftsdk.evaluation.labels import score_replies

    device = model.device
    shared = shared_prefix(prompts)
    tokens: list[list[int]] = [[] for _ in prompts]
    seconds = [0.0] * len(prompts)
    scores: list[list[float]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            prefix_cache = None
            if shared:
                prefix = torch.tensor([prompts[0][:shared]], device=device)
                prefix_cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            for rows in by_length(prompts, batch_size):
                began = time.perf_counter()
                cache = None
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)
                    cache.batch_repeat_interleave(len(rows))
                ids, mask = _own_tokens(tokenizer, [prompts[i][shared:] for i in rows])
                full_mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), mask], dim=1).to(device)
                positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
                out = model(input_ids=ids.to(device), attention_mask=full_mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache = out.past_key_values
                replies = _greedy(model, tokenizer, out.logits[:, -1], cache, full_mask, max_new_tokens)
                share = (time.perf_counter() - began) / len(rows)
                for row, reply in zip(rows, replies):
                    tokens[row], seconds[row] = reply, share
                if labels is not None:
                    generated = cache.get_seq_length() - full_mask.shape[1]
                    if generated:
                        cache.crop(-generated)
                    batch = score_replies(model, out.logits[:, -1], cache, full_mask, *labels).tolist()
                    for row, score in zip(rows, batch):
                        scores[row] = score
    finally:
        model.train(was_training)
    return Answers(tokens, seconds, scores if labels is not None else None)


def _own_tokens(tokenizer: Any, suffixes: list[list[int]]) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in suffixes)
    ids = torch.full((len(suffixes), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        ids[row, width - len(suffix) :] = torch.tensor(suffix)
        mask[row, width - len(suffix) :] = 1
    return ids, mask


def _greedy(model: Any, tokenizer: Any, logits: Any, cache: Any, mask: Any, max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding as ``generate(do_sample=False)`` does it: finished rows get padding, all done stops."""
    import torch

    eos = model.generation_config.eos_token_id
    stops = torch.tensor([eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id]), device=mask.device)
    done = torch.zeros(len(mask), dtype=torch.bool, device=mask.device)
    position = mask.sum(-1, keepdim=True)
    steps = []
    for step in range(max_new_tokens):
        token = logits.argmax(-1).masked_fill(done, tokenizer.pad_token_id)
        steps.append(token)
        done |= torch.isin(token, stops)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((len(mask), 1), dtype=mask.dtype, device=mask.device)], dim=1)
        logits = model(input_ids=token.unsqueeze(1), attention_mask=mask, position_ids=position + step,
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    return torch.stack(steps, dim=1).tolist()
