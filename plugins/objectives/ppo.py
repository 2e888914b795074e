"""Proximal Policy Optimization, built in ftsdk (TRL 1.16 removed its PPOTrainer).

The policy is the adapter-wrapped model; a value head on its last hidden state is trained with it; the
reference is the same model with its PEFT adapter disabled (a frozen copy for full fine-tuning); the reward
comes from reward functions and/or a reward model. See ``ppo_rollout``, ``ppo_advantages``, ``ppo_losses``
and ``ppo_trainer`` for the pieces.
"""

from __future__ import annotations

from pydantic import Field

from ftsdk import Adapter, Objective, hookimpl
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import TrainJob, TrainOutcome
from ftsdk.training.recipe import TrainingConfig
from ftsdk_plugins.objectives._rewards import RewardOptions


class PpoConfig(RewardOptions):
    """Options of PPO, with the rewards. A step is one rollout of training.batch_size x
    gradient_accumulation x num_mini_batches prompts, then ppo_epochs passes of num_mini_batches updates."""

    max_new_tokens: int = Field(64, ge=1, description="Tokens generated per completion at most.")
    temperature: float = Field(
        0.7, gt=0, le=2, description="Sampling temperature of the rollouts (log-probabilities use it too).",
    )
    num_mini_batches: int = Field(1, ge=1, le=256, description="Optimizer steps per pass over a rollout.")
    ppo_epochs: int = Field(4, ge=1, le=100, description="Passes over each rollout: more reuse, more clipping.")
    clip_range: float = Field(0.2, gt=0, lt=1, description="How far the probability ratio may move per rollout.")
    value_clip_range: float = Field(0.2, gt=0, description="How far a value estimate may move per rollout.")
    value_coef: float = Field(0.1, ge=0, description="Weight of the value loss in the total loss.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount per token; 1 suits short completions.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda: lower trusts the value head more (less "
                       "variance, more bias).")
    kl_coef: float = Field(
        0.05, ge=0, description="Per-token penalty on the log-ratio to the reference: keeps the policy fluent "
        "and stops reward hacking; 0.01-0.1 is typical, raise it if the KL grows past ~10 nats.",
    )


class PpoObjective(Objective):
    """Online RL with a learned value baseline, a KL penalty to the reference and clipped updates."""

    name = "ppo"
    summary = "PPO: online RL with a value head, KL to the adapter-disabled reference, GAE (built in ftsdk)"
    Config = PpoConfig
    data_task = "prompt"
    requires = ("peft",)

    config: PpoConfig

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        if self.config.max_new_tokens >= training.max_length:
            raise ConfigError(
                f"ppo: max_new_tokens={self.config.max_new_tokens} leaves no room for the prompt within "
                f"training.max_length={training.max_length}",
                hint="raise training.max_length or lower max_new_tokens",
            )
        self.config.check_rewards()

    def train(self, job: TrainJob) -> TrainOutcome:
        from ftsdk_plugins.objectives._rewards import reward_callables
        from ftsdk_plugins.objectives.ppo_trainer import PpoTrainer

        rewards = reward_callables(self.config, job.placement.device)
        return PpoTrainer(job, self.config, rewards, self.config.weights()).train()


@hookimpl
def register_objectives(register):
    register(PpoObjective)
