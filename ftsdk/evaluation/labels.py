"""Scoring model replies against references."""

from __future__ import annotations

import string
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ftsdk.data.formats import Conversation


def normalize(text: str) -> str:
    """Lower-case, trim whitespace and surrounding punctuation: 'Billing.' matches 'billing'."""
    return text.strip().strip(string.punctuation + " \n").lower()


@dataclass(frozen=True)
class LabelScore:
    """Exact-match accuracy of predicted labels, with the rate of replies outside the label set."""

    accuracy: float
    invalid_rate: float
    count: int
    per_label: dict[str, float]


def score_labels(predictions: list[str], references: list[str]) -> LabelScore:
    """Compare normalized replies with reference labels."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("nothing to score")
    labels = {normalize(r) for r in references}
    hits = Counter()
    totals = Counter(normalize(r) for r in references)
    invalid = 0
    for predicted, reference in zip(predictions, references):
        guess, gold = normalize(predicted), normalize(reference)
        invalid += guess not in labels
        hits[gold] += guess == gold
    return LabelScore(
        accuracy=sum(hits.values()) / len(references),
        invalid_rate=invalid / len(references),
        count=len(references),
        per_label={label: hits[label] / totals[label] for label in sorted(totals)},
    )


def label_log_likelihoods(
    model: Any,
    tokenizer: Any,
    conversations: list[Conversation],
    labels: list[str],
    *,
    batch_size: int = 16,
    max_length: int = 1024,
) -> list[list[float]]:
    """log P(reply = label, then end of turn | conversation) for every conversation and label.

    The reply tokens are found with the same assistant mask training uses, so this works with any
    chat template. Each prompt is run once; its KV cache is shared by all the labels' replies.
    Constrained scoring gives a base model that answers in prose a fair chance.
    """
    import torch

    prompts, replies = prompts_and_replies(tokenizer, conversations, labels, max_length)
    reply_ids, reply_mask = reply_table(tokenizer, labels, replies)
    scores: list[list[float]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                batch = _score_batch(model, tokenizer, prompts[start : start + batch_size], reply_ids, reply_mask)
                scores += batch.tolist()
    finally:
        model.train(was_training)
    return scores


def prompts_and_replies(
    tokenizer: Any, conversations: list[Conversation], labels: list[str], max_length: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Each conversation's prompt ids (cut from the left to ``max_length``) and each label's reply ids."""
    from ftsdk.data.tokenize import IGNORE_INDEX, tokenize_conversation

    prompts, replies = [], []
    for index, conversation in enumerate(conversations):
        for position, label in enumerate(labels if index == 0 else labels[:1]):
            reply = {"role": "assistant", "content": label}
            example = tokenize_conversation(tokenizer, [*conversation, reply], max_length=sys.maxsize)
            first = next(i for i, tag in enumerate(example.labels) if tag != IGNORE_INDEX)
            if position == 0:  # the prompt is the same whatever the label; keep its end
                prompts.append(example.input_ids[:first][-max_length:])
            if index == 0:  # a reply is tokenized on its own, so it is the same after every prompt
                replies.append([t for t in example.labels if t != IGNORE_INDEX])
    return prompts, replies


def _score_batch(model: Any, tokenizer: Any, prompts: list[list[int]], reply_ids: Any, reply_mask: Any) -> Any:
    """Summed reply log-probabilities, shape (len(prompts), number of labels)."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding: every prompt ends at the last column
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    device = model.device
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=1)
    return score_replies(model, out.logits[:, -1], out.past_key_values, mask.to(device), reply_ids, reply_mask)


def reply_table(tokenizer: Any, labels: list[str], replies: list[list[int]]) -> tuple[Any, Any]:
    """The label replies' token ids as one right-padded (labels, width) tensor, and its mask."""
    import torch

    width = max(len(r) for r in replies)
    reply_ids = torch.full((len(labels), width), tokenizer.pad_token_id, dtype=torch.long)
    reply_mask = torch.zeros((len(labels), width), dtype=torch.long)
    for row, ids in enumerate(replies):
        reply_ids[row, : len(ids)] = torch.tensor(ids)
        reply_mask[row, : len(ids)] = 1
    return reply_ids, reply_mask


def score_replies(model: Any, last_logits: Any, cache: Any, mask: Any, reply_ids: Any, reply_mask: Any) -> Any:
    """Summed log-probabilities of every label reply after every prompt, shape (prompts, labels).

    ``last_logits`` (prompts, vocab) predict each reply's first token; ``cache`` holds the prompts (it is expanded
    to one row per prompt and label, in place) and ``mask`` (prompts, cache length) marks its real tokens.
    """
    import torch

    count, prompts, device = len(reply_ids), len(last_logits), last_logits.device
    first_logits = last_logits.float().repeat_interleave(count, dim=0)
    targets = reply_ids.repeat(prompts, 1).to(device)
    valid = reply_mask.repeat(prompts, 1).to(device)
    logits = first_logits.unsqueeze(1)
    if targets.shape[1] > 1:
        cache.batch_repeat_interleave(count)
        lengths = mask.sum(-1).repeat_interleave(count).unsqueeze(1)
        steps = torch.arange(targets.shape[1] - 1, device=device).unsqueeze(0)
        rest = model(
            input_ids=targets[:, :-1],
            attention_mask=torch.cat([mask.repeat_interleave(count, dim=0), valid[:, :-1]], dim=1),
            position_ids=lengths + steps,
            past_key_values=cache,
            use_cache=True,
        ).logits.float()
        logits = torch.cat([logits, rest], dim=1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    log_probs = (picked - logits.logsumexp(-1)) * valid
    return log_probs.sum(-1).view(prompts, count).cpu()

def choose_labels(model: Any, tokenizer: Any, conversations: list[Conversation], labels: list[str], **kwargs: Any) -> list[str]:
    """The most likely label reply for each conversation (constrained classification)."""
    rows = label_log_likelihoods(model, tokenizer, conversations, labels, **kwargs)
    return [labels[max(range(len(labels)), key=row.__getitem__)] for row in rows]
