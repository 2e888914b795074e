"""SimPO: reference-free preference optimization on length-normalised log-probabilities with a target margin,
trained by TRL's (experimental) CPOTrainer with ``loss_type="simpo"``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftsdk import PluginConfig, hookimpl
from ftsdk.plugin.jobs import TrainJob
from ftsdk_plugins.objectives.cpo import CpoObjective


class SimpoConfig(PluginConfig):
    """Options of SimPO (see trl.experimental.cpo.CPOConfig with loss_type simpo). No reference model is kept."""

    beta: float = Field(
        2.0, gt=0, le=100, description="Scale of the length-normalised reward (the paper uses 2.0-2.5; TRL's "
        "generic default 0.1 is far too small for SimPO).",
    )
    gamma: float = Field(
        0.5, ge=0, le=100, description="Target reward margin between chosen and rejected (TRL's simpo_gamma); the "
        "paper pairs beta 2-2.5 with gamma = 0.3-0.8 x beta.",
    )
    cpo_alpha: float = Field(
        0.0, ge=0, le=100, description="Weight of an SFT term on the chosen answers: 0 is pure SimPO; above 0 "
        "is CPO-SimPO.",
    )
    max_completion_length: int | None = Field(
        None, ge=1, description="Tokens kept of each answer; None keeps what fits in training.max_length."
    )


class SimpoObjective(CpoObjective):
    """Prefer chosen over rejected answers by their average log-probability, without a reference model: CPO's
    trainer with SimPO's loss."""

    name = "simpo"
    summary = "SimPO: length-normalised, reference-free preference optimization with a margin (TRL CPO)"
    Config = SimpoConfig

    config: SimpoConfig  # type: ignore[assignment]

    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        return {
            "max_length": job.training.max_length,
            "max_completion_length": self.config.max_completion_length,
            "beta": self.config.beta,
            "loss_type": "simpo",
            "simpo_gamma": self.config.gamma,
            "cpo_alpha": self.config.cpo_alpha,
        }


@hookimpl
def register_objectives(register):
    register(SimpoObjective)
