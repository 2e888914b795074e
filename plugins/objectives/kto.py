"""Kahneman-Tversky Optimization with TRL's KTOTrainer, on completions labelled good or bad one by one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ftsdk import Adapter, PluginConfig, hookimpl
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import TrainJob
from ftsdk.training.recipe import TrainingConfig
from ftsdk_plugins.objectives._trl import TrlObjective, refuse_adapter_on_lm_head


class KtoConfig(PluginConfig):
    """Options of KTO (see trl.KTOConfig). The reference model is handled as for DPO."""

    beta: float = Field(
        0.1, gt=0, description="How far the policy may drift from the reference: higher keeps it closer.",
    )
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        "kto", description="kto: the KTO paper's loss; apo_zero_unpaired: anchored variant for when the "
        "desirable answers are better than what the model writes now.",
    )
    desirable_weight: float = Field(
        1.0, gt=0, description="Weight of the desirable (label true) rows. Keep desirable_weight x #desirable "
        "to undesirable_weight x #undesirable between 1 and 4/3 when the classes are unbalanced.",
    )
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of the undesirable (label false) rows.")


class KtoObjective(TrlObjective):
    """Raise the likelihood of good completions and lower that of bad ones, from unpaired thumbs up/down."""

    name = "kto"
    summary = "KTO: learn from completions labelled desirable or not, no pairs needed (TRL)"
    Config = KtoConfig
    data_task = "unpaired_preference"

    config: KtoConfig

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        if training.batch_size < 2 and self.config.loss_type == "kto":
            raise ConfigError(
                "kto needs training.batch_size of at least 2: its KL baseline pairs each prompt with "
                "another row's completion in the same batch",
                hint="set training.batch_size: 2 or more (gradient_accumulation does not count)",
            )
        refuse_adapter_on_lm_head(self.name, adapter)

    def trl_classes(self) -> tuple[type, type]:
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer

    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        return {
            "max_length": job.training.max_length,
            "beta": self.config.beta,
            "loss_type": self.config.loss_type,
            "desirable_weight": self.config.desirable_weight,
            "undesirable_weight": self.config.undesirable_weight,
        }


@hookimpl
def register_objectives(register):
    register(KtoObjective)
