"""Reward-model training with TRL's RewardTrainer: a scalar score head learns to rank chosen above rejected."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftsdk import PluginConfig, hookimpl
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import TrainJob, TrainOutcome
from ftsdk_plugins.objectives._trl import TrlObjective


class RewardConfig(PluginConfig):
    """Options of reward-model training (see trl.RewardConfig). Pairs longer than training.max_length
    are skipped, not truncated."""

    center_rewards_coefficient: float | None = Field(
        None, gt=0, description="Pull the scores towards a zero mean (0.01 is the recommended value); helps "
        "when the scores feed PPO or are compared across prompts.",
    )


class RewardObjective(TrlObjective):
    """A sequence-classification model with one output, trained on preference pairs (Bradley-Terry loss)."""

    name = "reward"
    summary = "Reward model: score answers so that chosen ranks above rejected (TRL)"
    Config = RewardConfig
    data_task = "preference"
    model_head = "sequence_classification"

    config: RewardConfig

    def prepare_model(self, model: Any) -> Any:
        """Give the model one output: a newly loaded classification head has two (and is untrained)."""
        import torch

        if model.config.num_labels == 1:
            return model
        old = getattr(model, "score", None)
        if not isinstance(old, torch.nn.Linear):
            raise ConfigError(
                f"{type(model).__name__} has {model.config.num_labels} outputs and no linear `score` head to "
                "replace with a one-output head",
                hint="start from a causal LM checkpoint or a reward model saved with num_labels=1",
            )
        head = torch.nn.Linear(old.in_features, 1, bias=old.bias is not None, dtype=old.weight.dtype,
                               device=old.weight.device)
        torch.nn.init.normal_(head.weight, std=getattr(model.config, "initializer_range", 0.02))
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)
        model.score = head
        model.config.num_labels = 1
        return model

    def train(self, job: TrainJob) -> TrainOutcome:
        head = [p for n, p in job.model.named_parameters() if "score" in n.split(".")]
        if not any(p.requires_grad for p in head):
            raise ConfigError(
                "the score head is frozen, so the reward model would keep a random head",
                hint="the adapter must train and save the head (PEFT: task_type SEQ_CLS, which adds `score` to "
                "modules_to_save)",
            )
        return super().train(job)

    def trl_classes(self) -> tuple[type, type]:
        from trl import RewardConfig as TrlRewardConfig
        from trl import RewardTrainer

        return TrlRewardConfig, RewardTrainer

    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        return {
            "max_length": job.training.max_length,
            "center_rewards_coefficient": self.config.center_rewards_coefficient,
        }


@hookimpl
def register_objectives(register):
    register(RewardObjective)
