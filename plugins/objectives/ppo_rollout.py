"""PPO rollouts: sample completions from the policy, then score them token by token (policy and reference
log-probabilities, values) and as a whole (rewards)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ftsdk.plugin.errors import ConfigError
from ftsdk_plugins.objectives._rewards import RewardFunction


class ValueHead(torch.nn.Module):
    """A linear value estimate on the policy's last hidden state, trained with it (starts at zero)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


@dataclass
class Scored:
    """What one forward pass gives on the completion tokens."""

    logprobs: torch.Tensor
    values: torch.Tensor | None
    entropy: torch.Tensor


@dataclass
class Rollout:
    """A batch of sampled completions and everything PPO needs about them (no gradients)."""

    #: prompt (left-padded to ``prompt_length``) then completion (right-padded)
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_length: int
    #: 1.0 on completion tokens up to and including the first end-of-sequence token
    mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    completions: list[str]

    def __len__(self) -> int:
        return len(self.scores)


def render_prompts(tokenizer: Any, prompts: Sequence[str | list[dict[str, str]]]) -> list[str]:
    """The text the policy continues: the chat template with a generation prompt when there is one."""
    if not tokenizer.chat_template:
        if any(isinstance(p, list) for p in prompts):
            raise ConfigError("chat prompts need a tokenizer with a chat template")
        return list(prompts)  # type: ignore[arg-type]
    conversations = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1.0 on each completion's tokens through its first end-of-sequence token, 0.0 after it."""
    is_eos = completion_ids == eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~after_eos).float()


@torch.no_grad()
def sample(
    model: Any, tokenizer: Any, prompt_texts: list[str], max_new_tokens: int, temperature: float,
    max_prompt_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sample one completion per prompt. Returns ``(input_ids, attention_mask, prompt_length)``."""
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    try:
        batch = tokenizer(prompt_texts, return_tensors="pt", padding=True, truncation=True,
                          max_length=max_prompt_tokens, add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    output = model.generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    prompt_length = batch["input_ids"].shape[1]
    mask = completion_mask(output[:, prompt_length:], tokenizer.eos_token_id)
    return output, torch.cat([batch["attention_mask"], mask.long()], dim=1), prompt_length


def score_tokens(
    model: Any, value_head: ValueHead | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    prompt_length: int, temperature: float,
) -> Scored:
    """Log-probabilities (at the sampling temperature), values and entropies of the completion tokens."""
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   output_hidden_states=value_head is not None, use_cache=False)
    length = input_ids.shape[1]
    # prompt-tuning adapters prepend virtual tokens: keep the positions of the real ones
    logits = output.logits[:, -length:][:, prompt_length - 1 : -1].float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    tokens = input_ids[:, prompt_length:]
    logprobs = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    values = None
    if value_head is not None:
        values = value_head(output.hidden_states[-1][:, -length:][:, prompt_length - 1 : -1])
    return Scored(logprobs, values, entropy)


class Reference:
    """The frozen reference policy: the PEFT model with its adapter disabled, or a frozen copy of a full model."""

    def __init__(self, model: Any) -> None:
        from peft import PeftModel

        self.model = model
        self.copy = None if isinstance(model, PeftModel) else copy.deepcopy(model).eval().requires_grad_(False)

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        if self.copy is not None:
            yield self.copy
            return
        with self.model.disable_adapter():
            yield self.model


def total_rewards(
    rewards: Sequence[RewardFunction], weights: Sequence[float], examples: list[dict[str, Any]], completions: list[str],
) -> torch.Tensor:
    """The weighted sum of every reward for each completion; the examples' other columns go to the functions."""
    prompts = [e["prompt"] for e in examples]
    columns = {key: [e.get(key) for e in examples] for key in examples[0] if key != "prompt"}
    total = torch.zeros(len(completions))
    for reward, weight in zip(rewards, weights, strict=True):
        values = list(reward(prompts=prompts, completions=completions, **columns))
        if len(values) != len(completions) or any(v is None for v in values):
            raise ValueError(
                f"reward {getattr(reward, '__name__', reward)} returned {len(values)} values (or None) for "
                f"{len(completions)} completions: it must return one float per completion"
            )
        total += weight * torch.tensor(values, dtype=torch.float32)
    return total


@torch.no_grad()
def collect(
    model: Any, reference: Reference, value_head: ValueHead, tokenizer: Any, examples: list[dict[str, Any]],
    rewards: Sequence[RewardFunction], weights: Sequence[float], *, max_new_tokens: int,
    temperature: float, max_prompt_tokens: int,
) -> Rollout:
    """Sample completions for ``examples`` and score them (the model is left in eval mode)."""
    model.eval()
    texts = render_prompts(tokenizer, [e["prompt"] for e in examples])
    input_ids, attention_mask, prompt_length = sample(model, tokenizer, texts, max_new_tokens, temperature,
                                                      max_prompt_tokens)
    policy = score_tokens(model, value_head, input_ids, attention_mask, prompt_length, temperature)
    with reference.active() as ref_model:
        ref = score_tokens(ref_model, None, input_ids, attention_mask, prompt_length, temperature)
    mask = attention_mask[:, prompt_length:].float()
    # generate pads finished rows, so all that follows the end-of-sequence token is special
    completions = tokenizer.batch_decode(input_ids[:, prompt_length:], skip_special_tokens=True)
    scores = total_rewards(rewards, weights, examples, completions).to(mask.device)
    assert policy.values is not None
    return Rollout(input_ids, attention_mask, prompt_length, mask, policy.logprobs * mask, ref.logprobs * mask,
                   policy.values * mask, scores, completions)

