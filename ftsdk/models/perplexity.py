"""Perplexity of a transformers model on texts: the reference every quantized or merged model is compared with.

Texts are tokenized once (:func:`encode_texts`) so another runtime (llama.cpp) can be scored on the very
same token ids (:func:`perplexity_from_nll`). Conversations are scored twice on one pass over the same ids
(:func:`split_perplexity`): over the reference reply's tokens alone (what assistant-only tuning trains) and over
the whole conversation, prompt included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Perplexity:
    """exp(mean negative log-likelihood) over ``tokens`` predicted tokens."""

    value: float
    nll: float
    tokens: int

    def as_dict(self) -> dict[str, float | int]:
        return {"perplexity": round(self.value, 4), "mean_nll": round(self.nll / self.tokens, 6), "tokens": self.tokens}


def perplexity_from_nll(nll: float, tokens: int) -> Perplexity:
    """Build a :class:`Perplexity` from a summed negative log-likelihood."""
    if tokens <= 0:
        raise ValueError("no token was predicted: the texts are empty or one token long")
    return Perplexity(value=math.exp(nll / tokens), nll=nll, tokens=tokens)


@dataclass(frozen=True)
class ConversationPerplexity:
    """Perplexity of the reference replies alone (the headline) and of the whole conversations, same token ids."""

    reply: Perplexity
    whole: Perplexity


def split_perplexity(token_nlls: list[list[float]], reply_masks: list[list[bool]]) -> ConversationPerplexity:
    """Reply-only and whole-conversation perplexity from per-token negative log-likelihoods.

    ``token_nlls[i][j]`` is the NLL of token ``j + 1`` of sequence ``i`` (every token but the first is predicted);
    ``reply_masks[i][j]`` says whether token ``j`` of sequence ``i`` belongs to the reply.
    """
    reply_nll, reply_tokens, whole_nll, whole_tokens = 0.0, 0, 0.0, 0
    for nlls, mask in zip(token_nlls, reply_masks, strict=True):
        if len(nlls) != len(mask) - 1:
            raise ValueError(f"{len(nlls)} token NLLs for a sequence of {len(mask)} tokens")
        picked = [nll for nll, in_reply in zip(nlls, mask[1:]) if in_reply]
        reply_nll, reply_tokens = reply_nll + sum(picked), reply_tokens + len(picked)
        whole_nll, whole_tokens = whole_nll + sum(nlls), whole_tokens + len(nlls)
    return ConversationPerplexity(perplexity_from_nll(reply_nll, reply_tokens),
                                  perplexity_from_nll(whole_nll, whole_tokens))


def encode_texts(tokenizer: Any, texts: list[str], *, max_length: int = 512) -> list[list[int]]:
    """Token ids of each text (with the tokenizer's special tokens), cut to ``max_length``."""
    return [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]


def token_nlls(model: Any, sequences: list[list[int]], *, batch_size: int = 4) -> list[list[float]]:
    """Next-token negative log-likelihood of every token of ``sequences`` but the first (``len(ids) - 1`` each)."""
    import torch

    out: list[list[float]] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout (a live model under training is in train mode)
    try:
        with torch.inference_mode():
            for start in range(0, len(sequences), batch_size):
                batch = sequences[start : start + batch_size]
                width = max(len(ids) for ids in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, tokens in enumerate(batch):
                    ids[row, : len(tokens)] = torch.tensor(tokens)
                    mask[row, : len(tokens)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
                picked = -log_probs.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
                out += [picked[row, : len(tokens) - 1].tolist() for row, tokens in enumerate(batch)]
    finally:
        model.train(was_training)
    return out


def sequence_nll(model: Any, sequences: list[list[int]], *, batch_size: int = 4) -> tuple[float, int]:
    """Summed next-token negative log-likelihood of ``sequences`` and the number of predicted tokens."""
    nlls = token_nlls(model, sequences, batch_size=batch_size)
    return sum(map(sum, nlls)), sum(map(len, nlls))


def perplexity(model: Any, tokenizer: Any, texts: list[str], *, max_length: int = 512, batch_size: int = 4) -> Perplexity:
    """Perplexity of a loaded transformers causal LM on ``texts``."""
    nll, tokens = sequence_nll(model, encode_texts(tokenizer, texts, max_length=max_length), batch_size=batch_size)
    return perplexity_from_nll(nll, tokens)
