"""Supervised fine-tuning with TRL's SFTTrainer, on ftsdk's own assistant-only loss mask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ftsdk import Objective, PluginConfig, hookimpl
from ftsdk.console import quiet_datasets
from ftsdk.plugin.errors import ConfigError, DataError
from ftsdk.plugin.jobs import TrainJob, TrainOutcome
from ftsdk.training.replay import ReplayOptions
from ftsdk.training.trained_positions import trained_positions_only
from ftsdk.training.trainer import run_trainer, trainer_arguments

if TYPE_CHECKING:
    from ftsdk.plugin.kinds import Adapter
    from ftsdk.training.recipe import TrainingConfig


class SftConfig(PluginConfig):
    """Options of supervised fine-tuning (see trl.SFTConfig)."""

    assistant_only_loss: bool = Field(
        True, description="Learn only the assistant turns (and their end-of-turn token), not the prompts."
    )
    assistant_turns: Literal["all", "last"] = Field(
        "all", description="Which assistant turns of a multi-turn conversation are learned: every one, or the last."
    )
    packing: bool = Field(
        False, description="Pack several short examples into each max_length sequence (faster on short rows)."
    )
    neftune_noise_alpha: float | None = Field(
        None, gt=0, description="NEFTune: noise added to embeddings during training (5 is a common value)."
    )
    replay: ReplayOptions | None = Field(
        None, description="Fight forgetting: mix general rows into training at a ratio, optionally with a KL pull "
        "toward the base model on them: {data, ratio, kl_weight, seed}, see the training guide. None: task rows only."
    )

    @model_validator(mode="after")
    def _replay_unpacked(self) -> SftConfig:
        if self.replay is not None and self.packing:
            raise ValueError("replay rows cannot be packed (the replay ratio and the KL count whole rows): "
                             "drop packing: true, or drop replay:")
        return self


class SftObjective(Objective):
    """Next-token prediction on demonstrations."""

    name = "sft"
    summary = "Supervised fine-tuning on chat (with tools), alpaca, prompt/completion or raw text rows (TRL)"
    Config = SftConfig
    data_task = "sft"
    requires = ("trl", "datasets")

    config: SftConfig

    def check_training(self, training: TrainingConfig, adapter: Adapter) -> None:
        if training.padding_free is True and self.config.replay is not None:
            raise ConfigError(
                "training.padding_free: true cannot go with sft replay: the replay flag and the KL to the base are "
                "per row, and a padding-free batch is one row",
                hint="set training.padding_free: auto (off with replay) or false, or drop replay:",
            )

    def train(self, job: TrainJob) -> TrainOutcome:
        from trl import SFTConfig, SFTTrainer

        train = self._dataset(job, job.train_examples, "training", self.config.replay)
        evaluation = self._dataset(job, job.eval_examples, "evaluation") if job.eval_examples else None
        padding_free = self.config.replay is None and padding_free_wanted(
            job.training.padding_free, job.placement.device, job.model.config._attn_implementation
        )
        args = SFTConfig(
            **trainer_arguments(job),
            # rows are already cut to max_length (ftsdk tokenizes); TRL refuses a max_length it would not enforce
            max_length=None if padding_free and not self.config.packing else job.training.max_length,
            packing=self.config.packing,
            padding_free=padding_free,
            neftune_noise_alpha=self.config.neftune_noise_alpha,
        )
        if self.config.packing or padding_free:
            # with the KV cache on, packed rows attend to each other in transformers 5 (seen: 0.4 logit error)
            job.model.config.use_cache = False
        trainer_class, extras = SFTTrainer, {}
        if self.config.replay is not None:
            from ftsdk_plugins.objectives._sft_replay import ReplaySFTTrainer

            trainer_class, extras = ReplaySFTTrainer, {"kl_weight": self.config.replay.kl_weight}
        with quiet_datasets():
            trainer = trainer_class(
                model=job.model,
                args=args,
                train_dataset=train,
                eval_dataset=evaluation,
                processing_class=job.tokenizer,
                callbacks=job.callbacks,
                **extras,
            )
        with trained_positions_only(job.training.head_on_trained_positions):
            return run_trainer(trainer)

    def _dataset(self, job: TrainJob, examples: Any, role: str, replay: ReplayOptions | None = None) -> Any:
        from datasets import Dataset

        from ftsdk.data.tokenize import tokenize_all

        kept, dropped = tokenize_all(
            job.tokenizer, examples, job.training.max_length, self.config.assistant_only_loss,
            self.config.assistant_turns,
        )
        if not kept:
            raise DataError(
                f"no {role} example keeps a trained token within max_length={job.training.max_length}",
                hint="raise training.max_length or shorten the prompts",
            )
        if dropped:
            import warnings

            warnings.warn(
                f"{dropped} {role} example(s) dropped: no assistant token within max_length="
                f"{job.training.max_length}",
                stacklevel=2,
            )
        if replay is not None:
            from ftsdk.training.replay import mix, replay_rows

            general = replay_rows(replay, job.tokenizer, job.training.max_length, self.config.assistant_only_loss,
                                  self.config.assistant_turns)
            return Dataset.from_dict(mix(kept, general, replay.ratio, replay.seed))
        return Dataset.from_dict(
            {"input_ids": [e.input_ids for e in kept], "labels": [e.labels for e in kept]}
        )


#: attention kernels that take packed rows as variable-length sequences (no dense mask)
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def padding_free_wanted(setting: bool | str, device: str, attention: str | None) -> bool:
    """``training.padding_free`` resolved: auto is on only on CUDA with a varlen attention kernel."""
    if setting != "auto":
        return bool(setting)
    return device.startswith("cuda") and attention in VARLEN_ATTENTION


@hookimpl
def register_objectives(register):
    register(SftObjective)
