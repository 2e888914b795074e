"""Odds Ratio Preference Optimization with TRL's (experimental) ORPOTrainer: SFT and preference in one loss."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftsdk import Adapter, PluginConfig, hookimpl
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import TrainJob
from ftsdk.training.recipe import TrainingConfig
from ftsdk_plugins.objectives._trl import TrlObjective

#: PEFT methods that prepend virtual tokens, lengthening the logits past the labels in TRL's ORPO trainer
VIRTUAL_TOKEN_METHODS = frozenset({"PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"})


class OrpoConfig(PluginConfig):
    """Options of ORPO (see trl.experimental.orpo.ORPOConfig). No reference model is kept."""

    beta: float = Field(
        0.1, gt=0, description="Weight of the odds-ratio (preference) term against the SFT loss on the chosen "
        "answers (the paper's lambda): 0.1 is standard; raise to 0.25-0.5 to push harder away from rejected ones.",
    )
    max_completion_length: int | None = Field(
        None, ge=1, description="Tokens kept of each answer; None keeps what fits in training.max_length.",
    )


class OrpoObjective(TrlObjective):
    """Supervised learning on the chosen answers plus a penalty on the rejected ones' odds, in one stage."""

    name = "orpo"
    summary = "ORPO: SFT and preference learning in one stage, no reference model (TRL experimental)"
    Config = OrpoConfig
    data_task = "preference"

    config: OrpoConfig

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        method = adapter.method() if callable(getattr(adapter, "method", None)) else None
        if method in VIRTUAL_TOKEN_METHODS:
            raise ConfigError(
                f"objective 'orpo' cannot train adapter '{adapter.name}' ({method}): its virtual tokens lengthen "
                "the logits past the labels in TRL's ORPO trainer (a batch-size mismatch in the loss)",
                hint="use adapter prefix or lora with orpo, or objective dpo with this adapter",
            )

    def trl_classes(self) -> tuple[type, type]:
        import warnings

        with warnings.catch_warnings():  # TRL warns that its experimental API may change: ftsdk pins TRL
            warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer
        return ORPOConfig, ORPOTrainer

    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        return {
            "max_length": job.training.max_length,
            "max_completion_length": self.config.max_completion_length,
            "beta": self.config.beta,
        }


@hookimpl
def register_objectives(register):
    register(OrpoObjective)
