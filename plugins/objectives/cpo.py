"""Contrastive Preference Optimization with TRL's (experimental) CPOTrainer: a reference-free preference loss
plus an SFT term on the chosen answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ftsdk import Adapter, PluginConfig, hookimpl
from ftsdk.plugin.jobs import TrainJob
from ftsdk.training.recipe import TrainingConfig
from ftsdk_plugins.objectives._trl import TrlObjective, refuse_adapter_on_lm_head


def cpo_classes() -> tuple[type, type]:
    """TRL's CPO config and trainer (SimPO is its ``loss_type="simpo"``)."""
    import warnings

    with warnings.catch_warnings():  # TRL warns that its experimental API may change: ftsdk pins TRL
        warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
        from trl.experimental.cpo import CPOConfig, CPOTrainer
    return CPOConfig, CPOTrainer


class CpoConfig(PluginConfig):
    """Options of CPO (see trl.experimental.cpo.CPOConfig). No reference model is kept."""

    beta: float = Field(0.1, gt=0, description="Temperature of the preference loss (0.1 is standard).")
    loss_type: Literal["sigmoid", "hinge", "ipo"] = Field(
        "sigmoid", description="sigmoid: the CPO paper's loss; hinge: SLiC; ipo: squared loss."
    )
    cpo_alpha: float = Field(
        1.0, ge=0, le=100, description="Weight of the SFT (negative log-likelihood) term on the chosen answers."
    )
    max_completion_length: int | None = Field(
        None, ge=1, description="Tokens kept of each answer; None keeps what fits in training.max_length."
    )


class CpoObjective(TrlObjective):
    """Prefer chosen over rejected answers without a reference model, while imitating the chosen ones."""

    name = "cpo"
    summary = "CPO: reference-free preference loss plus SFT on the chosen answers (TRL experimental)"
    Config = CpoConfig
    data_task = "preference"

    config: CpoConfig

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        refuse_adapter_on_lm_head(self.name, adapter)

    def trl_classes(self) -> tuple[type, type]:
        return cpo_classes()

    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        return {
            "max_length": job.training.max_length,
            "max_completion_length": self.config.max_completion_length,
            "beta": self.config.beta,
            "loss_type": self.config.loss_type,
            "cpo_alpha": self.config.cpo_alpha,
        }


@hookimpl
def register_objectives(register):
    register(CpoObjective)
