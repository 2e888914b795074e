"""PPO's maths on known tensors: GAE against a hand computation, the clipped losses, the masks and rewards."""

from __future__ import annotations

import pytest
import torch

from ftsdk_plugins.objectives.ppo_advantages import gae, masked_mean, masked_whiten, token_rewards
from ftsdk_plugins.objectives.ppo_losses import policy_loss, value_loss
from ftsdk_plugins.objectives.ppo_rollout import completion_mask


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    # t=2: 1 - 0.7 = 0.3; t=1: (0 + 0.7 - 0.6) + 0.95 * 0.3 = 0.385; t=0: (0.6 - 0.5) + 0.95 * 0.385
    torch.testing.assert_close(advantages, torch.tensor([[0.46575, 0.385, 0.3]]))
    torch.testing.assert_close(returns, advantages + values)


def test_gae_discounts_and_stops_at_the_end_of_each_completion():
    rewards = torch.tensor([[0.0, 2.0, 9.0], [1.0, 0.0, 0.0]])
    values = torch.tensor([[1.0, 1.0, 9.0], [0.5, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0, t=1 is last: 2 - 1 = 1; t=0: (0 + 0.9 * 1 - 1) + 0.9 * 0.5 * 1 = 0.35. Row 1: 1 - 0.5
    torch.testing.assert_close(advantages, torch.tensor([[0.35, 1.0, 0.0], [0.5, 0.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.35, 2.0, 0.0], [1.0, 0.0, 0.0]]))


def test_token_rewards_put_the_score_on_the_last_token_and_penalise_the_log_ratio():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = token_rewards(torch.tensor([1.0, -1.0]), logprobs, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -2.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 1.2], [-0.1, -1.0, 0.0]]))


def test_whitening_and_means_ignore_masked_entries():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_mean(values, mask) == 2.0
    torch.testing.assert_close(masked_whiten(values, mask), torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)


def test_policy_loss_clips_the_ratio_on_the_side_the_advantage_favours():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))  # ratios
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    result = policy_loss(new, old, advantages, torch.ones(1, 4), clip_range=0.2)
    # per token max(-A r, -A clip(r)): A=1,r=1.5 -> -1.2 (clipped); A=1,r=.5 -> -.5; A=-1,r=1.5 -> 1.5; A=-1,r=.5 -> .8
    assert result.loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4)
    assert result.clip_fraction.item() == pytest.approx(0.5)
    assert result.approx_kl.item() == pytest.approx(float((0.5 * new**2).mean()))


def test_policy_loss_gradient_vanishes_once_clipped():
    new = torch.log(torch.tensor([[1.5]])).requires_grad_()
    policy_loss(new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip_range=0.2).loss.backward()
    assert new.grad.item() == 0.0


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    old = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[1.0, 1.0]])
    result = value_loss(values, old, returns, torch.ones(1, 2), clip_range=0.2)
    # token 0: unclipped 0, clipped (0.2 - 1)^2 = 0.64; token 1: unclipped 0.81, clipped 0.81
    assert result.loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert result.clip_fraction.item() == pytest.approx(0.5)


def test_completion_mask_keeps_tokens_through_the_first_eos():
    ids = torch.tensor([[5, 6, 2, 2, 2], [5, 2, 7, 2, 2], [5, 6, 7, 8, 9]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    torch.testing.assert_close(completion_mask(ids, eos_token_id=2), expected)
