"""What the TRL-trained objectives (dpo, orpo, kto, reward, grpo) share: datasets in TRL's shapes,
the trainer built from ftsdk's settings, and the clean-up of TRL's reference adapter."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from ftsdk import Adapter, Objective
from ftsdk.console import quiet_datasets
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import TrainJob, TrainOutcome
from ftsdk.training.trained_positions import trained_positions_only
from ftsdk.training.trainer import run_trainer, trainer_arguments

#: the keys of a row that hold the model's replies (wrapped as assistant turns in chat form)
REPLY_KEYS = ("chosen", "rejected", "completion")


def chat_form(example: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """A plain-string row as a user turn and assistant replies, so training renders the chat template that
    ``Tuner.generate`` prompts with; left as is when it is already chat or the tokenizer has no template."""
    if isinstance(example["prompt"], list) or not tokenizer.chat_template:
        return example
    converted = dict(example, prompt=[{"role": "user", "content": example["prompt"]}])
    for key in REPLY_KEYS:
        if key in example:
            converted[key] = [{"role": "assistant", "content": example[key]}]
    return converted


def refuse_adapter_on_lm_head(objective: str, adapter: Adapter) -> None:
    """Refuse an adapter on ``lm_head``: TRL computes these objectives' log-probabilities from
    ``lm_head.weight`` directly, so the adapter there would never train (TRL raises only after loading)."""
    targets = getattr(adapter.config, "target_modules", None)
    if isinstance(targets, list) and "lm_head" in targets:
        raise ConfigError(
            f"objective '{objective}' cannot train an adapter on lm_head: TRL computes its log-probabilities "
            "from lm_head.weight directly",
            hint="remove lm_head from adapter_config.target_modules",
        )


def drop_reference_adapter(model: Any) -> None:
    """Delete the frozen "ref" adapter TRL adds to a PEFT model, so only the trained adapter is saved."""
    if "ref" in (getattr(model, "peft_config", None) or {}):
        model.delete_adapter("ref")
        model.set_adapter("default")


class TrlObjective(Objective):
    """An objective trained by one TRL trainer; subclasses name the trainer and map their options."""

    requires: ClassVar[tuple[str, ...]] = ("trl", "datasets")

    @abstractmethod
    def trl_classes(self) -> tuple[type, type]:
        """The TRL ``(config class, trainer class)``, imported inside the method (TRL is heavy)."""

    @abstractmethod
    def method_arguments(self, job: TrainJob) -> dict[str, Any]:
        """The method's own config-class arguments (beta, loss_type, lengths...); they win over the shared ones."""

    def trainer_extras(self, job: TrainJob) -> dict[str, Any]:
        """Extra trainer arguments (e.g. GRPO's reward functions)."""
        return {}

    def train(self, job: TrainJob) -> TrainOutcome:
        config_class, trainer_class = self.trl_classes()
        args = config_class(**(trainer_arguments(job) | self.method_arguments(job)))
        with quiet_datasets():
            trainer = trainer_class(
                model=job.model,
                args=args,
                train_dataset=self.dataset(job, job.train_examples),
                eval_dataset=self.dataset(job, job.eval_examples) if job.eval_examples else None,
                processing_class=job.tokenizer,
                callbacks=job.callbacks,
                **self.trainer_extras(job),
            )
        try:
            with trained_positions_only(job.training.head_on_trained_positions):
                return run_trainer(trainer)
        finally:
            drop_reference_adapter(job.model)

    def dataset(self, job: TrainJob, examples: list[dict[str, Any]]) -> Any:
        """The examples as a ``datasets.Dataset`` in TRL's (conversational where possible) shape."""
        from datasets import Dataset

        return Dataset.from_list([chat_form(example, job.tokenizer) for example in examples])
