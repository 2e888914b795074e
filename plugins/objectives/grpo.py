"""Group Relative Policy Optimization with TRL's GRPOTrainer: several completions per prompt, scored by
reward functions or a reward model, each pushed up or down by how it compares with its group."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ftsdk import Adapter, hookimpl
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import TrainJob
from ftsdk.training.recipe import TrainingConfig
from ftsdk_plugins.objectives._rewards import RewardOptions, reward_callables
from ftsdk_plugins.objectives._trl import TrlObjective, refuse_adapter_on_lm_head


class GrpoConfig(RewardOptions):
    """Options of GRPO (see trl.GRPOConfig), with the rewards. One optimizer step uses
    training.batch_size x training.gradient_accumulation completions: that many / num_generations prompts."""

    num_generations: int = Field(
        4, ge=2, le=256, description="Completions sampled per prompt; their rewards' spread is the learning "
        "signal. 4-8 on small budgets, 16+ for hard tasks. Must divide batch_size x gradient_accumulation.",
    )
    max_completion_length: int = Field(64, ge=1, description="Tokens generated per completion at most.")
    temperature: float = Field(
        1.0, gt=0, le=2, description="Sampling temperature: the group needs diverse completions (0.7-1.0).",
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens "
                         "whose probabilities add up to this.")
    beta: float = Field(
        0.0, ge=0, description="KL penalty against the reference model; 0 (the default, as in DAPO and Dr. GRPO) "
        "keeps no reference and is cheaper; 0.001-0.04 keeps the policy closer to where it started.",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the probability ratio, as in PPO.")
    num_iterations: int = Field(
        1, ge=1, description="Optimizer passes over each batch of completions (the paper's mu); above 1 reuses "
        "generations and makes the clipping matter.",
    )
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="How token losses are averaged: dapo (default, no length bias), grpo (the paper's, "
        "per sequence: favours short right answers), dr_grpo (fixed constant), bnpo (per local batch).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the reward spread of the group, of the batch, or not at all "
        "(Dr. GRPO's advice: avoids over-weighting prompts that are too easy or too hard).",
    )


class GrpoObjective(TrlObjective):
    """Online RL without a value model: the group's mean reward is the baseline."""

    name = "grpo"
    summary = "GRPO: online RL from reward functions or a reward model, group-relative advantages (TRL)"
    Config = GrpoConfig
    data_task = "prompt"

    config: GrpoConfig

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        completions = training.batch_size * training.gradient_accumulation
        if completions % self.config.num_generations:
            raise ConfigError(
                f"grpo: training.batch_size x gradient_accumulation = {completions} completions per step cannot "
                f"hold whole groups of num_generations={self.config.num_generations}",
                hint="make batch_size x gradient_accumulation a multiple of num_generations",
            )
        refuse_adapter_on_lm_head(self.name, adapter)
        self.config.check_rewards()

    def trl_classes(self) -> tuple[type, type]:
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer

    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        c = self.config
        return {
            "num_generations": c.num_generations,
            "per_device_eval_batch_size": c.num_generations,  # evaluation needs whole groups too
            "max_completion_length": c.max_completion_length,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "beta": c.beta,
            "epsilon": c.epsilon,
            "num_iterations": c.num_iterations,
            "loss_type": c.loss_type,
            "scale_rewards": c.scale_rewards,
            "reward_weights": c.weights(),
        }

    def trainer_extras(self, job: TrainJob) -> dict[str, Any]:
        return {"reward_funcs": reward_callables(self.config, job.placement.device)}


@hookimpl
def register_objectives(register):
    register(GrpoObjective)
