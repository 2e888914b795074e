"""Perplexity of a transformers model on texts: the reference every quantized or merged model is compared with.

Texts are tokenized once (:func:`encode_texts`) so another runtime (llama.cpp) can be scored on the very
same token ids (:func:`perplexity_from_nll`).
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


def encode_texts(tokenizer: Any, texts: list[str], *, max_length: int = 512) -> list[list[int]]:
    """Token ids of each text (with the tokenizer's special tokens), cut to ``max_length``."""
    return [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]


def sequence_nll(model: Any, sequences: list[list[int]], *, batch_size: int = 4) -> tuple[float, int]:
    """Summed next-token negative log-likelihood of ``sequences`` and the number of predicted tokens."""
    import torch

    total, count = 0.0, 0
    device = next(model.parameters()).device
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
            target = ids[:, 1:].to(device)
            picked = log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            keep = mask[:, 1:].to(device).bool()
            total -= picked[keep].sum().item()
            count += int(keep.sum().item())
    return total, count


def perplexity(model: Any, tokenizer: Any, texts: list[str], *, max_length: int = 512, batch_size: int = 4) -> Perplexity:
    """Perplexity of a loaded transformers causal LM on ``texts``."""
    nll, tokens = sequence_nll(model, encode_texts(tokenizer, texts, max_length=max_length), batch_size=batch_size)
    return perplexity_from_nll(nll, tokens)
