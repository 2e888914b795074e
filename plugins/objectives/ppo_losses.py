"""PPO's clipped surrogate policy loss and clipped value loss, averaged over completion tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ftsdk_plugins.objectives.ppo_advantages import masked_mean


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    #: share of tokens whose ratio was clipped
    clip_fraction: torch.Tensor
    #: estimate of KL(old policy || new policy), a check on the step size
    approx_kl: torch.Tensor


@dataclass
class ValueLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_range: float,
) -> PolicyLoss:
    """``max(-A r, -A clip(r, 1-e, 1+e))`` with ``r = exp(logprobs - old_logprobs)``."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return PolicyLoss(
        loss=masked_mean(torch.maximum(unclipped, clipped), mask),
        clip_fraction=masked_mean((clipped > unclipped).float(), mask),
        approx_kl=masked_mean(0.5 * log_ratio**2, mask),
    )


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> ValueLoss:
    """``0.5 max((V - R)^2, (V_clipped - R)^2)``, with ``V_clipped`` kept within ``clip_range`` of the old value."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    return ValueLoss(
        loss=0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask),
        clip_fraction=masked_mean((clipped_loss > unclipped_loss).float(), mask),
    )
