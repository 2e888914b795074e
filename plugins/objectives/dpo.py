"""Direct Preference Optimization with TRL's DPOTrainer, on prompt/chosen/rejected pairs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ftsdk import Adapter, PluginConfig, hookimpl
from ftsdk.plugin.jobs import TrainJob
from ftsdk.training.recipe import TrainingConfig
from ftsdk_plugins.objectives._trl import TrlObjective, refuse_adapter_on_lm_head

DpoLoss = Literal["sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
                  "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]


class DpoConfig(PluginConfig):
    """Options of DPO (see trl.DPOConfig). The reference model is the model before training: with a PEFT
    adapter, a frozen copy of the freshly initialised adapter (the same as the base for LoRA); for full
    fine-tuning, a second copy of the base weights."""

    beta: float = Field(
        0.1, gt=0, description="How far the policy may drift from the reference: higher keeps it closer "
        "(0.1 is standard; 0.01-0.05 learns faster, 0.5 is conservative). For ipo it is the regulariser tau.",
    )
    loss_type: DpoLoss = Field(
        "sigmoid", description="sigmoid: the DPO paper's loss (default); ipo: squared loss that does not "
        "over-fit deterministic preferences; hinge: SLiC; robust: for noisy labels (set label_smoothing); "
        "apo_zero/apo_down: anchored losses when chosen answers are better/worse than the model's own.",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Assumed probability that a pair's label is flipped, for noisy "
        "preference data: sigmoid (conservative DPO) and robust take ~0.1; exo_pair needs it above 0 (1e-3).",
    )

    @model_validator(mode="after")
    def _smoothing_matches_the_loss(self) -> DpoConfig:
        if self.label_smoothing and self.loss_type not in ("sigmoid", "robust", "exo_pair"):
            raise ValueError(f"label_smoothing has no effect with loss_type '{self.loss_type}'")
        if self.loss_type == "exo_pair" and not self.label_smoothing:
            raise ValueError("loss_type 'exo_pair' needs label_smoothing above 0 (the EXO paper uses 0.001)")
        return self


class DpoObjective(TrlObjective):
    """Prefer the chosen answer over the rejected one, relative to a frozen reference, without a reward model."""

    name = "dpo"
    summary = "DPO: learn from preference pairs against a frozen reference (TRL)"
    Config = DpoConfig
    data_task = "preference"

    config: DpoConfig

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        refuse_adapter_on_lm_head(self.name, adapter)

    def trl_classes(self) -> tuple[type, type]:
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer

    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        return {
            "max_length": job.training.max_length,
            "beta": self.config.beta,
            "loss_type": [self.config.loss_type],
            "label_smoothing": self.config.label_smoothing,
        }


@hookimpl
def register_objectives(register):
    register(DpoObjective)
